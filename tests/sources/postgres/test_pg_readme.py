"""The README's PostgreSQL walk-through, run as written against a throwaway cluster.

The section's ``sh`` blocks are taken from README.md and run in order with bash, so
the text cannot drift from what works. The only rewrites are what a test cluster
forces: ``localhost:5432`` becomes the cluster's address, ``sudo -u postgres psql``
connects as its superuser over TCP, ``sudo systemctl restart postgresql`` restarts it
with ``pg_ctl``, and ``athena-cdc serve`` gets a free port and a temporary data
directory. The cluster starts with ``wal_level = replica``, as a fresh installation
does, so the ``ALTER SYSTEM`` step is needed and proven. A WebSocket client checks
that the rows arrive as the README shows them.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_cluster import ClusterSetupError, PgCluster, pg_cluster
from tests.protocol._support import client
from tests.support.servers import ServerProcess

README = Path(__file__).parents[3] / "README.md"
SECTION = "### Rows from PostgreSQL"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section()) if lang == language]


def commands(block: str) -> Iterator[str]:
    """Each command of a shell block, a here-document kept with its command."""
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            body = [line]
            for more in lines:
                body.append(more)
                if more.strip() == heredoc.group(1):
                    break
            yield "\n".join(body)
        else:
            yield line


@pytest.fixture(scope="module")
def fresh() -> Iterator[PgCluster]:
    try:
        with pg_cluster(wal_level="replica") as cluster:  # as a fresh installation
            yield cluster
    except ClusterSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


def shell(cluster: PgCluster, command: str) -> None:
    address = f"127.0.0.1:{cluster.port}"
    command = command.replace("sudo -u postgres psql",
                              f"psql postgresql://postgres@{address}/postgres")
    command = command.replace("localhost:5432", address)
    command = re.sub(r"^psql ", "psql -v ON_ERROR_STOP=1 ", command)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], capture_output=True,
                            text=True, timeout=60, env={"PATH": f"{cluster.bin}:/usr/bin:/bin"})
    assert result.returncode == 0, f"{command}\n{result.stderr}"


def wait_ready(server: ServerProcess, log: Path, timeout: float = 30.0) -> None:
    """Until /ready is 200; fail at once, with its output, if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise AssertionError(f"athena-cdc exited ({server.proc.returncode}): "
                                 f"{log.read_text()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(server.base + "/ready", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"athena-cdc never became ready: {log.read_text()}")


def shown_event() -> dict[str, Any]:
    """The event the README shows, with ``...`` (varying values) as None."""
    [line] = [b for b in blocks("") if '"op":"insert"' in b]
    event: dict[str, Any] = json.loads(line.replace("...", "null"))
    return event


def comparable(payload: dict[str, Any]) -> dict[str, Any]:
    # lsn, xid and the commit time differ from run to run.
    return {k: v for k, v in payload.items() if k not in ("lsn", "xid", "commit_ts_ms")}


async def test_readme_postgres_walk_through_runs_as_written(
    fresh: PgCluster, tmp_path: Path
) -> None:
    sh = blocks("sh")
    assert len(sh) == 6, "the walk-through's shell blocks changed: update this test"
    setup, schema, serve, insert, move, cleanup = sh
    for command in commands(setup):
        if command == "sudo systemctl restart postgresql":
            fresh.restart()
            fresh.wait_ready()
        else:
            shell(fresh, command)
    for command in commands(schema):
        shell(fresh, command)
    [serve_command] = commands(serve)
    argv = shlex.split(serve_command.replace("localhost:5432", f"127.0.0.1:{fresh.port}"))
    # As a new user runs it: from the virtual environment of the README's first command.
    assert argv[:2] == [".venv/bin/athena-cdc", "serve"]
    log = tmp_path / "server.log"
    server = ServerProcess([*argv[2:], "--data-dir", str(tmp_path / "data")], log_path=log)
    with server:
        wait_ready(server, log)
        async with client(server.ws, "athena_logging") as logging_client, \
                client(server.ws, "athena_billing") as billing_client:
            for command in commands(insert):
                shell(fresh, command)
            [inserted] = await logging_client.recv_events(1, within=20)
            expected = shown_event()
            assert inserted["organization_id"] == expected["organization_id"]
            payload = inserted["data"]["payload"]
            assert comparable(payload) == comparable(expected["data"]["payload"])
            assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", payload["lsn"])
            for command in commands(move):
                shell(fresh, command)
            [left] = await logging_client.recv_events(1, within=20)
            [arrived] = await billing_client.recv_events(1, within=20)
        assert left["data"]["payload"] == arrived["data"]["payload"]
        assert arrived["data"]["payload"]["op"] == "update"
        assert arrived["data"]["payload"]["new"]["organization_id"] == "athena_billing"
        assert server.terminate() == 0  # "stop athena-cdc", then clean up
    for command in commands(cleanup):
        shell(fresh, command)
    conn = fresh.connect("shop")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots")
        assert cur.fetchone() == (0,)  # no slot left holding WAL
        cur.execute("SELECT count(*) FROM pg_publication")
        assert cur.fetchone() == (0,)
    conn.close()
