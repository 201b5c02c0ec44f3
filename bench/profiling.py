"""Sampling the server's hot path with ``py-spy`` while a scenario runs.

``py-spy record --pid`` attaches to the already running server (root or CAP_SYS_PTRACE
needed), so the server's own CPU accounting is untouched: py-spy is a separate process,
not a descendant. It writes collapsed stacks (``--format raw``); :func:`top_functions`
turns them into the two lists a reader wants: where the samples *are* (self time) and
what they are *under* (inclusive time).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` attached to one process until :meth:`stop`."""

    def __init__(self, pid: int, output: Path, rate: int = 250, native: bool = False) -> None:
        executable = py_spy()
        if executable is None:
            raise RuntimeError("py-spy is not installed")
        self.output = output
        command = [
            executable,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--nonblocking",
            "--output",
            str(output),
        ]
        if native:
            command.append("--native")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def stop(self) -> Path:
        """Stop sampling (SIGINT makes py-spy write its output) and return the file."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        for _ in range(200):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
        return self.output


def top_functions(raw: Path, count: int = 25) -> str:
    """Self and inclusive sample shares of the hottest frames in a py-spy raw file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, samples_text = line.rpartition(" ")
        if not stack or not samples_text.isdigit():
            continue
        samples = int(samples_text)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(count)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(count)]
    return "\n".join(lines)
