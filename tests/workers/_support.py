"""``athena-cdc serve --workers N`` for tests: the supervisor as a subprocess, its workers,
and clients that know which worker answered them (the ``X-Athena-Worker`` header)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from athena_cdc.server.workers import WORKER_HEADER
from tests.protocol._support import Client
from tests.support.servers import ServerProcess


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its workers), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def socket_dir_of(worker: int) -> Path:
    """The supervisor's private directory, from the worker's command line (its socket)."""
    argv = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    return Path(argv[3].decode()).parent


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def worker_on_health(port: int) -> str:
    """Which worker answered a /health on a new connection."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        return str(response.headers[WORKER_HEADER])


def wait_for_workers(port: int, count: int, timeout: float = 30.0) -> None:
    """Until every worker has answered (each new connection lands on one of them)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        with contextlib.suppress(OSError):
            seen.add(worker_on_health(port))
        time.sleep(0.02)


@contextlib.contextmanager
def workers_process(
    tmp_path: Path, *args: str, count: int = 2
) -> Iterator[ServerProcess]:
    """``serve --workers count`` with every worker listening; stopped with SIGTERM."""
    proc = ServerProcess(
        ["--workers", str(count), "--log-level", "info", *args],
        log_path=tmp_path / "server.log",
    )
    proc.start()
    try:
        wait_for_workers(proc.port, count)
        yield proc
    finally:
        assert proc.proc is not None
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                proc.proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in children(proc.proc.pid):
                    with contextlib.suppress(OSError):
                        os.kill(child, signal.SIGKILL)
                proc.proc.kill()
                proc.proc.wait(10)


@contextlib.asynccontextmanager
async def clients_on_every_worker(
    proc: ServerProcess, name: str, count: int = 2, at_least: int = 2
) -> AsyncIterator[dict[str, list[Client]]]:
    """Subscribed clients of channel ``name``, at least ``at_least`` on each of ``count``
    workers (connections are opened until the kernel has spread enough)."""
    async with contextlib.AsyncExitStack() as stack:
        by_worker: dict[str, list[Client]] = {}
        for _ in range(200):
            if len(by_worker) == count and all(len(c) >= at_least for c in by_worker.values()):
                break
            ws = await stack.enter_async_context(
                connect(
                    proc.ws,
                    additional_headers={"X-Athena-Client": name},
                    max_size=None,
                    open_timeout=10,
                    close_timeout=2,
                )
            )
            assert ws.response is not None
            client = Client(ws)
            hello = await client.recv()
            assert hello["status"] == "subscribed", hello
            by_worker.setdefault(ws.response.headers[WORKER_HEADER], []).append(client)
        assert len(by_worker) == count, f"clients landed on workers {sorted(by_worker)} only"
        yield by_worker


async def post(
    http: aiohttp.ClientSession, proc: ServerProcess, body: object
) -> tuple[str, list[dict[str, Any]]]:
    """POST /events; the worker that answered and the assigned events."""
    async with http.post(proc.base + "/events", json=body) as response:
        assert response.status == 201, await response.text()
        answer = await response.json()
        return response.headers[WORKER_HEADER], answer["events"]


def new_connection_each_time() -> aiohttp.ClientSession:
    """A session that opens a connection per request, so requests spread over workers."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
