"""The README's commands, run as written, so the text cannot drift from what works.

Every ``sh`` block of README.md and docs/*.md is either run here (the README's 60-second
tour), run by tests/sources/postgres/test_pg_readme.py (the README's PostgreSQL
walk-through), or marked just above its fence with ``<!-- not run: reason -->`` — a block
that is none of these fails the test. (docs/original/ is the specification, kept verbatim.)

The tour runs against a server on a free port: ``localhost:4053`` becomes that port and
``.venv/bin/`` the environment running the tests; nothing else is rewritten. A block whose
first line is ``$ command`` shows the command and then its output, which must match line
for line (``ts_ms`` and ``epoch`` vary from run to run and are compared by shape). A command
that keeps running (a client) goes on in the background; later blocks of bare output are
more of its output, and its ``> `` lines are typed into it.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sources.postgres import test_pg_readme
from tests.support.servers import ServerProcess
from tests.support.toolchain import ToolMissing, node_and_npm

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR = "## A 60-second tour"
POSTGRES = "### Rows from PostgreSQL"
BLOCK = re.compile(
    r"(?:^<!-- not run:(?P<reason>[^\n]*?)-->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.S | re.M,
)
ANSI = re.compile(r"\x1b(?:\[[0-9;]*[A-Za-z]|[78])")
WITHIN = 20.0  # seconds for one expected line; generous for a busy machine


@dataclass
class Block:
    lang: str
    body: str
    not_run: str | None  # the reason, when marked
    section: str
    prose: str  # the text between the previous block and this one


def readme_blocks(path: Path = README) -> list[Block]:
    text = path.read_text()
    blocks, previous_end = [], 0
    for match in BLOCK.finditer(text):
        headings = re.findall(r"^#{2,3} .*$", text[: match.start()], re.M)
        blocks.append(Block(match["lang"], match["body"],
                            None if match["reason"] is None else match["reason"].strip(),
                            headings[-1] if headings else "", text[previous_end:match.start()]))
        previous_end = match.end()
    return blocks


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_every_shell_block_is_run_or_says_why_not(doc: Path) -> None:
    pg_blocks = test_pg_readme.blocks("sh")
    for block in readme_blocks(doc):
        if block.not_run is not None:
            assert block.not_run, f"{doc.name}: <!-- not run: --> needs a reason:\n{block.body}"
        elif block.lang != "sh":
            continue
        elif doc == README and block.section == TOUR:
            continue  # run below
        elif doc == README and block.section == POSTGRES:
            assert block.body in pg_blocks
        else:
            pytest.fail(f"{doc.name}: block in {block.section!r} is neither run by a test nor "
                        f"marked <!-- not run: reason -->:\n{block.body}")


# -- the tour ----------------------------------------------------------------------------------


def normalised(line: str) -> str:
    line = re.sub(r'"ts_ms":\d+', '"ts_ms":0', line)
    return re.sub(r'"epoch":"[A-Za-z0-9_-]{11}"', '"epoch":"E"', line)


class Program:
    """A command of the README, its output read line by line in the background."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            for line in ANSI.sub("\n", raw).splitlines():
                if line.strip():
                    self.lines.put(line.rstrip())
        self.lines.put(None)

    def expect(self, wanted: str) -> None:
        # An interactive client's received messages are its "< " lines; prompts and
        # banners around them are not part of what the README shows.
        interactive = wanted.startswith("< ")
        while True:
            try:
                line = self.lines.get(timeout=WITHIN)
            except queue.Empty:
                pytest.fail(f"{self.command!r} printed no {wanted!r}; saw {self.seen}")
            if line is None:
                pytest.fail(f"{self.command!r} ended before {wanted!r}; saw {self.seen}")
            self.seen.append(line)
            if interactive and not line.startswith("< "):
                continue
            assert normalised(line) == normalised(wanted), self.command
            return

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def commands(body: str) -> Iterator[tuple[str, list[str]]]:
    """``$ command`` (continued while a quote is open or a line ends in ``\\``) and its output."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"output without its command: {lines[i]!r}"
        command = lines[i][2:]
        i += 1
        while (command.count("'") % 2 or command.endswith("\\")) and i < len(lines):
            command += "\n" + lines[i]
            i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        yield command, output


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """PATH as a new user's: node and npm (the machine's or the test extra's), the system's."""
    try:
        node, npm = node_and_npm()
    except ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, argv in (("node", node), ("npm", npm)):
        script = shims / name
        script.write_text('#!/bin/sh\nexec ' + " ".join(f"'{a}'" for a in argv) + ' "$@"\n')
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_readme_tour_runs_as_written(tmp_path: Path, shell_env: dict[str, str]) -> None:
    blocks = [b for b in readme_blocks() if b.section == TOUR]
    assert blocks, "the README has no tour"
    venv_bin = Path(sys.executable).parent
    work = tmp_path / "work"
    work.mkdir()
    programs: list[Program] = []
    with ServerProcess(["--data-dir", str(tmp_path / "data")]) as server:
        def as_here(text: str) -> str:
            text = text.replace("localhost:4053", f"127.0.0.1:{server.port}")
            return text.replace(".venv/bin/", f"{venv_bin}/")

        client: Program | None = None  # the client whose output bare blocks continue
        ran = 0
        try:
            for block in blocks:
                if block.not_run is not None:
                    continue
                if block.lang == "js":
                    [name] = re.findall(r"as `(\w+\.js)`", block.prose)
                    (work / "tour" / name).write_text(as_here(block.body))
                    continue
                if block.lang not in ("sh", ""):
                    continue
                if not block.body.startswith("$ "):
                    if block.lang == "sh":  # a script: run it to the end
                        result = subprocess.run(["bash", "-euo", "pipefail", "-c",
                                                 as_here(block.body)], cwd=work, env=shell_env,
                                                capture_output=True, text=True, timeout=300)
                        assert result.returncode == 0, f"{block.body}\n{result.stderr}"
                    else:  # more output of the client started before
                        assert client is not None, f"output of no command:\n{block.body}"
                        for line in block.body.splitlines():
                            client.expect(line)
                    ran += 1
                    continue
                for command, output in commands(block.body):
                    cwd = work / "tour" if "client.js" in command else work
                    program = Program(as_here(command), cwd, shell_env)
                    programs.append(program)
                    for line in output:
                        if line.startswith("> "):
                            program.type(line[2:])
                        else:
                            program.expect(as_here(line))
                    try:  # a one-shot command ends once it has printed its output
                        code = program.proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:  # a client: it goes on listening
                        if not any(line.startswith("< ") for line in output):
                            client = program
                    else:
                        assert code == 0, f"{command} exited with {code}: {program.seen}"
                    ran += 1
        finally:
            for program in programs:
                program.stop()
    assert ran >= 5, "fewer tour steps than the README shows: update this test"
