"""CPU time and memory of a process tree, read from ``/proc`` (Linux only).

The benchmarks' primary figure is *delivered messages per second of server CPU time*, so
the server's CPU must be read the same way for every server under test: ``utime + stime``
from ``/proc/<pid>/stat`` for the process and all its live descendants, plus the
``cutime + cstime`` it has collected from children that already exited. Resolution is
one clock tick (usually 10 ms); scenarios make each measured interval long enough.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (``state`` is index 0)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants, including reaped ones."""
    total = 0
    for index, member in enumerate([pid, *descendants(pid)]):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if index == 0:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime of reaped children
    return total / CLOCK_TICKS


def cpu_seconds_precise(pid: int) -> float:
    """CPU seconds of the live threads of ``pid`` and its descendants, to the nanosecond.

    From ``/proc/<pid>/task/<tid>/schedstat`` (time on CPU, user + system). A cross-check
    of :func:`cpu_seconds` for short intervals; threads that exited are not counted.
    """
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            tasks = os.listdir(f"/proc/{member}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                total += int(Path(f"/proc/{member}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants (``VmRSS``), in bytes."""
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def machine_ticks() -> tuple[int, int, int]:
    """``(busy, softirq, total)`` clock ticks of all CPUs so far, from ``/proc/stat``.

    Softirq time matters on loopback: the receiving side of a TCP send runs in softirq,
    often in ``ksoftirqd``, and is then charged to no process at all.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, fields[6], total


def machine_usage(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """Busy and softirq share of the whole machine between two :func:`machine_ticks`."""
    span = max(1, after[2] - before[2])
    return {
        "machine_busy_pct": 100 * (after[0] - before[0]) / span,
        "softirq_pct": 100 * (after[1] - before[1]) / span,
    }


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by the calling process."""
    times = os.times()
    return times.user + times.system
