"""Shared fixtures: servers on free ports, with each log backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from athena_cdc.server.app import AthenaServer
from tests.support.servers import running_server


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over the log backends (redis: a fresh database of the
    session's redis-server, as a redis:// URL)."""
    value: str = request.param
    if value == "redis":
        url: str = request.getfixturevalue("redis_url") + "/0"
        flush_redis(url)
        return url
    return value


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the session (tests/log/redis_server.py)."""
    from tests.log.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield f"redis://127.0.0.1:{server.port}"
    server.stop()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
async def server(store: str, tmp_path: Path) -> AsyncIterator[AthenaServer]:
    """A server on a free port, with the backend of the ``store`` parameter."""
    async with running_server(store=store, data_dir=str(tmp_path / "data")) as srv:
        yield srv


@pytest.fixture
async def memory_server(tmp_path: Path) -> AsyncIterator[AthenaServer]:
    async with running_server(store="memory") as srv:
        yield srv


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a failed test here: CI must not pass by not running things."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        reporter.write_line("skipped tests count as failures (see tests/conftest.py)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
