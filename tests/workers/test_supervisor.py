"""The supervisor of ``--workers N``: restarts, drain, its own death, and bad settings
(real processes: the supervisor and its workers, signals, sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from athena_cdc.server.workers import WORKER_HEADER
from tests.protocol._support import Client, client, seqs
from tests.support.servers import ServerProcess, free_port
from tests.workers._support import (
    alive,
    children,
    clients_on_every_worker,
    new_connection_each_time,
    socket_dir_of,
    wait_for_workers,
    workers_process,
)


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def closed_with(client: Client) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(client.ws.recv(), 20)
    return client.ws.close_code


async def test_a_worker_killed_with_sigkill_is_restarted_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    with workers_process(tmp_path, "--store", "sqlite", "--data-dir", str(tmp_path / "d")) as proc:
        assert proc.proc is not None
        before = children(proc.proc.pid)
        assert len(before) == 2
        acknowledged: dict[int, int] = {}  # seq -> payload
        stop = asyncio.Event()

        async def produce() -> None:
            n = 0
            async with new_connection_each_time() as http:
                while not stop.is_set():
                    n += 1
                    with contextlib.suppress(aiohttp.ClientError):
                        body = {"organization_id": "k", "payload": n}
                        async with http.post(proc.base + "/events", json=body) as response:
                            if response.status == 201:
                                answer = await response.json()
                                acknowledged[answer["events"][0]["seq"]] = n
                    await asyncio.sleep(0.002)

        producers = [asyncio.create_task(produce()) for _ in range(4)]
        await asyncio.sleep(0.5)
        os.kill(before[0], signal.SIGKILL)
        log = tmp_path / "server.log"
        await asyncio.to_thread(
            wait_until, lambda: "was killed by SIGKILL" in log.read_text(), 20
        )
        assert "restarting it in" in log.read_text()
        # A new worker takes the dead one's place, and both answer again.
        pid = proc.proc.pid
        await asyncio.to_thread(
            wait_until, lambda: len(children(pid)) == 2 and before[0] not in children(pid)
        )
        await asyncio.to_thread(wait_for_workers, proc.port, 2)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*producers)
        assert acknowledged
        async with client(proc.ws, "reader") as reader:
            events, _ = await reader.travel(organization_id="k", since_seq=0, limit=50_000)
        stored = {e["data"]["seq"]: e["data"]["payload"] for e in events}
        assert seqs(events) == list(range(1, len(events) + 1))  # dense, once each
        for seq, payload in acknowledged.items():
            assert stored.get(seq) == payload, seq


async def test_sigterm_drains_every_worker_closing_clients_with_1001(tmp_path: Path) -> None:
    with workers_process(tmp_path, "--store", "memory") as proc:
        assert proc.proc is not None
        workers = children(proc.proc.pid)
        socket_dir = socket_dir_of(workers[0])
        assert socket_dir.is_dir() and socket_dir.stat().st_mode & 0o777 == 0o700
        async with clients_on_every_worker(proc, "d", at_least=1) as by_worker:
            proc.proc.send_signal(signal.SIGTERM)
            for clients in by_worker.values():
                for c in clients:
                    assert await closed_with(c) == 1001
        assert await asyncio.to_thread(proc.proc.wait, 30) == 0
    assert not any(alive(pid) for pid in workers)
    assert not socket_dir.exists()  # the private socket directory is removed
    text = (tmp_path / "server.log").read_text()
    assert "draining 2 workers" in text and "Traceback" not in text


async def test_workers_stop_serving_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """The supervisor owns the log: without it a worker would serve stale data, so it
    closes its clients (1001) and exits."""
    with workers_process(tmp_path, "--store", "sqlite", "--data-dir", str(tmp_path / "d")) as proc:
        assert proc.proc is not None
        workers = children(proc.proc.pid)
        socket_dir = socket_dir_of(workers[0])
        async with clients_on_every_worker(proc, "orphan", at_least=1) as by_worker:
            proc.proc.kill()
            for clients in by_worker.values():
                for c in clients:
                    assert await closed_with(c) == 1001
        await asyncio.to_thread(wait_until, lambda: not any(alive(p) for p in workers))
    assert "the supervisor is gone" in (tmp_path / "server.log").read_text()
    assert not socket_dir.exists()  # the orphaned workers removed it


def test_one_worker_is_one_process_as_before(tmp_path: Path) -> None:
    proc = ServerProcess(["--store", "memory", "--workers", "1"])
    with proc:
        assert proc.proc is not None
        assert children(proc.proc.pid) == []
        with urllib.request.urlopen(proc.base + "/health", timeout=5) as response:
            assert WORKER_HEADER not in response.headers


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--store", "memory", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "--workers: must be at least 1 (got '0')"),
        ("-2", "--workers: must be at least 1 (got '-2')"),
        ("abc", "--workers: invalid value 'abc': expected a number of processes such as 2"),
        ("1.5", "--workers: invalid value '1.5'"),
        ("999999", f"--workers: must be at most {4 * len(os.sched_getaffinity(0))} (4 per core"),
    ],
)
def test_a_bad_worker_count_is_one_line_and_exit_2(value: str, says: str) -> None:
    result = serve("--workers", value, "--port", str(free_port()))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"athena-cdc: error: {says}"), lines


def test_a_sigterm_while_the_workers_start_stops_the_supervisor_at_once() -> None:
    """It used to start every worker first: with many, minutes of a starved machine."""
    most = 4 * len(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "athena_cdc", "serve", "--store", "memory"]
    proc = subprocess.Popen(
        [*command, "--workers", str(most), "--port", str(free_port())],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: bool(children(proc.pid)), timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "stopped" in stderr


def test_a_port_in_use_stops_the_supervisor_before_any_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--workers", "2", "--port", str(port))
    assert result.returncode == 2
    assert "the port is in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_exit_code(
    tmp_path: Path,
) -> None:
    """A store a worker cannot use (here: a Redis that does not answer) fails in the
    worker; the supervisor stops the others and exits non-zero, saying why."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    result = serve("--workers", "2", "--store", dead_redis, "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    assert "cannot use Redis" in result.stderr
    assert "while starting: stopping" in result.stderr


def test_a_second_supervisor_on_the_same_port_is_refused(tmp_path: Path) -> None:
    """SO_REUSEPORT would let it join the port with a log of its own: it must not."""
    with workers_process(tmp_path, "--store", "memory") as proc:
        result = serve("--workers", "2", "--port", str(proc.port))
        assert result.returncode == 2
        assert "the port is in use" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_a_sigterm_while_workers_start_still_drains_those_already_serving(
    tmp_path: Path,
) -> None:
    """A worker that listens serves clients before the others are up (SO_REUSEPORT):
    a SIGTERM then killed it with SIGKILL, and its clients saw the socket drop with no
    close frame (and a publish in flight, no answer) instead of 1001."""
    most = 4 * len(os.sched_getaffinity(0))  # many workers: the last ones start late
    proc = ServerProcess(
        ["--store", "memory", "--workers", str(most), "--log-level", "info"],
        log_path=tmp_path / "server.log",
    )
    proc.start()  # returns once any worker answers /health
    try:
        async with client(proc.ws, "early") as c:
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            assert await closed_with(c) == 1001
        assert await asyncio.to_thread(proc.proc.wait, 30) == 0
    finally:
        assert proc.proc is not None
        if proc.proc.poll() is None:
            for child in children(proc.proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
            proc.proc.kill()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
