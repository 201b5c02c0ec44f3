"""Connection caps: WebSocket connections per client IP (429) and in total (503).

Also what happens when the process runs out of file descriptors anyway: the server
neither spins nor floods its log, and recovers as the deadlines free descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from athena_cdc.cli import build_parser
from athena_cdc.config import ConfigError, Settings, load_settings
from athena_cdc.server.app import AthenaServer
from tests.protocol._support import Client, client, get, raw_request
from tests.support.servers import free_port, running_server


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def refused(server: AthenaServer, name: str = "extra") -> tuple[int, dict[str, object]]:
    response = await raw_request(server.port, extra=f"X-Athena-Client: {name}\r\n".encode())
    response.close()
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert isinstance(body, dict)
    return response.status, body


@contextlib.asynccontextmanager
async def clients(server: AthenaServer, count: int) -> AsyncIterator[list[Client]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(server, f"c{i}")) for i in range(count)]


async def test_one_address_beyond_its_cap_gets_429_until_one_closes() -> None:
    async with running_server(store="memory", max_connections_per_ip=3) as server:
        async with clients(server, 3) as first_three:
            status, body = await refused(server)
            assert status == 429
            assert body["error"] == "too_many_connections"
            assert "3 connections" in str(body["message"])
            # Plain HTTP does not count: /health and the publish path stay open.
            assert (await get(server, "/health"))[0] == 200
            await first_three[0].ws.close()
            await until(lambda: server.limits.total == 2)
            async with client(server, "after-one-closed") as late:
                await late.ping()
        await until(lambda: server.limits.total == 0)
        assert server.limits.per_ip == {}  # nothing kept for an address that left


async def test_a_full_server_answers_503_until_one_closes() -> None:
    async with (
        running_server(store="memory", max_connections=2, max_connections_per_ip=0) as server,
        clients(server, 2) as both,
    ):
        status, body = await refused(server)
        assert status == 503
        assert body["error"] == "server_full"
        assert {"message", "hint"} <= body.keys()
        await both[1].ws.close()
        await until(lambda: server.limits.total == 1)
        async with client(server, "after-one-closed") as late:
            await late.ping()


async def test_every_way_a_connection_ends_gives_its_place_back() -> None:
    async with running_server(store="memory", max_connections_per_ip=3) as server:
        # Handshakes that fail: no client name, not an upgrade at all.
        for _ in range(5):
            response = await raw_request(server.port)
            assert response.status == 400
            response.close()
            response = await raw_request(
                server.port, upgrade=False, extra=b"X-Athena-Client: x\r\n"
            )
            assert response.status == 426
            response.close()
        # Peers that vanish without a close handshake, after the upgrade.
        for _ in range(5):
            response = await raw_request(server.port, extra=b"X-Athena-Client: gone\r\n")
            assert response.status == 101
            response.close()  # abort: a reset, no close frame
        await until(lambda: server.limits.total == 0)
        async with clients(server, 3) as three:
            for c in three:
                await c.ping()


async def test_caps_apply_to_the_peer_address_not_to_the_client_name() -> None:
    async with (
        running_server(store="memory", max_connections_per_ip=2) as server,
        client(server, "same"),
        client(server, "other"),
    ):
        status, _ = await refused(server, "a-third-name")
        assert status == 429


# -- out of file descriptors ------------------------------------------------------------

OPEN_FILES = 64  # the server process's limit: about 40 descriptors left for sockets
IDLE_SOCKETS = 100


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("uvloop", ["true", "false"])
def test_out_of_file_descriptors_the_server_recovers_without_spinning_or_log_spam(
    tmp_path: Path, uvloop: str
) -> None:
    """The issue's case: idle sockets beyond the process's open-files limit.

    Before the deadlines, /health stayed unreachable for as long as the idle peers
    kept their sockets (aiohttp's idle timeout is about an hour).
    """
    port = free_port()
    log_path = tmp_path / "server.log"

    def limit_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))

    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "athena_cdc",
                "serve",
                "--store",
                "memory",
                "--port",
                str(port),
                "--header-timeout",
                "1s",
                "--uvloop",
                uvloop,
            ],
            stdout=log_file,
            stderr=log_file,
            preexec_fn=limit_open_files,
        )
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while not health_ok(port):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE_SOCKETS)]
        cpu_before, started = cpu_seconds(proc.pid), time.monotonic()
        # The idle peers are closed at the header deadline; /health comes back.
        while not health_ok(port):
            assert time.monotonic() - started < 20, "/health did not come back"
            time.sleep(0.1)
        recovered = time.monotonic() - started
        time.sleep(max(0.0, 3.0 - recovered))
        cpu = cpu_seconds(proc.pid) - cpu_before
        elapsed = time.monotonic() - started
        # Out of descriptors again, and asked to stop right then.
        idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE_SOCKETS)]
        time.sleep(0.5)
        stopping = time.monotonic()
        proc.terminate()
        proc.wait(15)
        stopped = time.monotonic() - stopping
    finally:
        for sock in idle:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    print(
        f"uvloop={uvloop}: /health back after {recovered:.2f} s, {cpu:.2f} s CPU in "
        f"{elapsed:.2f} s, stopped in {stopped:.2f} s"
    )
    assert "Traceback" not in log, log
    assert log.count("out of file descriptors") <= 2, log
    # No busy loop: a spinning accept would burn a whole core.
    assert cpu < 0.5 * elapsed, f"{cpu:.2f} s of CPU in {elapsed:.2f} s"
    assert stopped < 5.0


# -- configuration ----------------------------------------------------------------------


def test_the_bounds_have_safe_defaults_and_come_from_flag_environment_or_file(
    tmp_path: Path,
) -> None:
    def settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
        return load_settings(build_parser().parse_args(["serve", *argv]), env or {})

    s = settings([])
    assert (s.header_timeout, s.body_timeout, s.keepalive_timeout) == (10.0, 30.0, 75.0)
    assert (s.tls_handshake_timeout, s.max_connections, s.max_connections_per_ip) == (
        10.0,
        100_000,
        1_000,
    )
    config = tmp_path / "athena.toml"
    config.write_text('body-timeout = "2m"\nmax-connections = 50\n')
    s = settings(
        ["--config", str(config), "--header-timeout", "500ms"],
        {"ATHENA_CDC_MAX_CONNECTIONS_PER_IP": "0", "ATHENA_CDC_TLS_HANDSHAKE_TIMEOUT": "3s"},
    )
    assert (s.header_timeout, s.body_timeout, s.tls_handshake_timeout) == (0.5, 120.0, 3.0)
    assert (s.max_connections, s.max_connections_per_ip) == (50, 0)
    with pytest.raises(ConfigError, match="--keepalive-timeout: must be positive"):
        settings(["--keepalive-timeout", "0"])
    with pytest.raises(ConfigError, match="--max-connections-per-ip: must be at least 0"):
        settings(["--max-connections-per-ip", "-1"])
