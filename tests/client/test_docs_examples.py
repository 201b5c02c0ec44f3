"""The Python examples of docs/clients.md and README.md, run as written against a
server subprocess (``localhost:4053`` becomes its port), so they cannot drift."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client._support import publish_retrying
from tests.client.test_terminal import Lines
from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", path.read_text(), re.S | re.M)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess(["--store", "memory"]) as srv:
        yield srv


def start(example: str, server: ServerProcess) -> subprocess.Popen[bytes]:
    code = example.replace("localhost:4053", f"127.0.0.1:{server.port}")
    # print() to a pipe is block-buffered: unbuffered, each line shows as it is printed
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)


def test_the_first_example_of_the_client_page_runs_as_written(server: ServerProcess) -> None:
    [example] = [b for b in python_blocks(ROOT / "docs" / "clients.md") if "asyncio.run" in b]
    publish_retrying(server.base, "org_42", ["a", "b"])
    publish_retrying(server.base, "org_43", list(range(12)))
    program = start(example, server)
    try:
        lines = Lines(program.stdout)  # type: ignore[arg-type]
        got = sorted(lines.take(12))  # two channels: their order between them may vary
        assert got == sorted(
            ["event org_42 1 a", "event org_42 2 b", *(f"event org_43 {s} {s - 1}"
                                                      for s in range(3, 13))]
        )
        publish_retrying(server.base, "org_42", ["live"])
        assert lines.take(1) == ["event org_42 3 live"]
    finally:
        program.kill()
        program.wait()


def test_the_python_example_of_the_readme_runs_as_written(server: ServerProcess) -> None:
    [example] = python_blocks(ROOT / "README.md")
    publish_retrying(server.base, "athena_logging", ["hello", "disk 91%"])
    program = start(example, server)
    try:
        [line] = Lines(program.stdout).take(1)  # type: ignore[arg-type]
        assert line.startswith("Event(channel='athena_logging', seq=2, ts_ms=")
        assert "payload='disk 91%'" in line
    finally:
        program.kill()
        program.wait()
