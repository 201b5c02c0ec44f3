"""docs/operations.md and the Dockerfile, held to the code they describe.

- the metrics table is what ``athena_cdc.metrics_reference`` renders, and a running
  server serves exactly the metrics it lists;
- the Dockerfile installs with the README's install command, its health check answers
  from /ready, and the arguments of its CMD and of the systemd unit are real options;
- the backup/restore procedure, run as written in a temporary data dir, restores the
  backup's events and continues under a new epoch.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from athena_cdc import metrics_reference
from athena_cdc.cli import build_parser
from tests.protocol._support import get
from tests.support.servers import ServerProcess, free_port, running_server

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"


def operations_text() -> str:
    return OPERATIONS.read_text()


def fenced_block(text: str, lang: str, containing: str) -> str:
    """The body of the first ``lang`` block of ``text`` that contains ``containing``."""
    for match in re.finditer(rf"^```{lang}\n(.*?)^```$", text, re.S | re.M):
        if containing in match[1]:
            return match[1]
    raise AssertionError(f"no {lang} block containing {containing!r}")


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_table_is_the_one_generated_from_the_code() -> None:
    text = operations_text()
    start = text.index(metrics_reference.BEGIN)
    end = text.index(metrics_reference.END) + len(metrics_reference.END)
    assert text[start:end] == metrics_reference.render(), (
        "docs/operations.md's metrics table differs from the code: replace it with the "
        "output of `python -m athena_cdc.metrics_reference`"
    )


async def test_a_running_server_serves_exactly_the_documented_metrics() -> None:
    async with running_server(store="memory") as server:
        # As make_sources does for each --source (a PostgreSQL source is not needed to
        # see which families it exports).
        server.metrics.watch_sources([metrics_reference.StubSource()])
        status, _, body = await get(server, "/metrics")
    assert status == 200
    # Every family has its TYPE line, even one without series (no source configured).
    served = {
        f"{name.removesuffix('_total')}_total" if kind == "counter" else name
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M)
    }
    assert served, body
    documented = {name for name, *_ in metrics_reference.rows()}
    assert served == documented
    for name in documented:
        assert f"| `{name}` |" in operations_text()


# -- Dockerfile and systemd -------------------------------------------------------------------


def readme_install_command() -> str:
    """The README's install step: its first command, without starting the server."""
    first = fenced_block(README.read_text(), "sh", "pip install").splitlines()[0]
    install, serve = first.split(" && .venv/bin/athena-cdc serve")
    assert serve == "", first
    return install


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines() if i.strip()]


def test_dockerfile_installs_with_the_readme_command() -> None:
    instructions = dockerfile_instructions()
    assert f"RUN {readme_install_command()}" in instructions
    # The runtime stage runs what that command installs, from the same path.
    [workdir] = [i.split()[1] for i in instructions if i.startswith("WORKDIR ")]
    [entrypoint] = [i for i in instructions if i.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == [
        f"{workdir}/.venv/bin/athena-cdc", "serve"
    ]
    assert f"COPY --from=build {workdir}/.venv {workdir}/.venv" in instructions
    assert any(i.startswith("USER ") and i != "USER root" for i in instructions)
    assert "EXPOSE 4053" in instructions


def serve_arguments_are_accepted(args: list[str]) -> None:
    _, unknown = build_parser().parse_known_args(["serve", *args])
    assert unknown == [], args


def test_dockerfile_cmd_and_systemd_unit_use_real_options() -> None:
    [cmd] = [i for i in dockerfile_instructions() if i.startswith("CMD ")]
    cmd_args = json.loads(cmd.removeprefix("CMD "))
    assert cmd_args[:2] == ["--host", "0.0.0.0"]
    serve_arguments_are_accepted(cmd_args)

    unit = fenced_block(operations_text(), "ini", "[Service]")
    [exec_start] = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    program, command, *args = shlex.split(exec_start)
    assert (program, command) == ("/opt/athena-cdc/.venv/bin/athena-cdc", "serve")
    serve_arguments_are_accepted(args)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
    # A refusal to start (exit 2) is not retried.
    assert re.search(r"^RestartPreventExitStatus=2$", unit, re.M)


def healthcheck(port: int) -> subprocess.CompletedProcess[bytes]:
    [check] = [i for i in dockerfile_instructions() if i.startswith("HEALTHCHECK ")]
    command = json.loads(check[check.index("CMD ") + 4:])
    assert command[0].endswith("/.venv/bin/python")
    code = command[2].replace(":4053/", f":{port}/")
    return subprocess.run([sys.executable, *command[1:2], code], capture_output=True, timeout=30)


async def test_dockerfile_healthcheck_follows_ready() -> None:
    async with running_server(store="memory") as server:
        assert server.port is not None
        ready = await asyncio.to_thread(healthcheck, server.port)
        assert ready.returncode == 0, ready.stderr
    down = await asyncio.to_thread(healthcheck, free_port())
    assert down.returncode != 0


# -- backup and restore -----------------------------------------------------------------------


def post(server: ServerProcess, n: int) -> int:
    request = urllib.request.Request(
        server.base + "/events",
        data=json.dumps({"organization_id": "acme", "payload": {"n": n}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        seq: int = json.load(response)["events"][0]["seq"]
        return seq


def test_restore_procedure_as_written(tmp_path: Path) -> None:
    data, backup = tmp_path / "data", tmp_path / "events-2026-11-28.sqlite3"
    log = tmp_path / "server.log"
    with ServerProcess(["--data-dir", str(data)], log_path=log) as server:
        assert [post(server, n) for n in (1, 2, 3)] == [1, 2, 3]
        # What `sqlite3 events.sqlite3 ".backup FILE"` does, while the server runs.
        with sqlite3.connect(data / "events.sqlite3") as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        assert [post(server, n) for n in (4, 5)] == [4, 5]
        assert server.terminate() == 0

    block = fenced_block(operations_text(), "sh", "--on-damage new-epoch")
    lines = block.replace("/var/lib/athena-cdc", str(data)).replace(
        "/backup/events-2026-11-28.sqlite3", str(backup)
    ).splitlines()
    assert lines[0] == "systemctl stop athena-cdc"  # done above
    *steps, start = lines[1:]
    subprocess.run(["bash", "-euc", "\n".join(steps)], check=True, timeout=30)

    program, command, *args = shlex.split(start)
    assert (program, command) == ("/opt/athena-cdc/.venv/bin/athena-cdc", "serve")
    assert "--on-damage" in args
    without = [a for a in args if a not in ("--on-damage", "new-epoch")]
    refused = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--port", str(free_port()), *without],
        capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode == 2, refused.stderr
    assert "seq-highwater is missing" in refused.stderr

    with ServerProcess(args, log_path=log) as server:
        assert post(server, 6) == 4  # after the backup's last seq, under a new epoch
        assert server.terminate() == 0
    assert "continuing under the new epoch" in log.read_text()
    # From then on the new epoch is the log's own: a plain start works.
    with ServerProcess(without, log_path=log) as server:
        assert post(server, 7) == 5
        assert server.terminate() == 0
