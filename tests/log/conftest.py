from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.redis import RedisLog
from athena_cdc.log.sqlite import SqliteLog
from tests.log.redis_server import RedisServer

LogFactory = Callable[..., EventLog]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the session; each test uses its own database number."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield f"redis://127.0.0.1:{server.port}"
    server.stop()


_databases = iter(range(1, 10_000))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> LogFactory:
    """Build an (unopened) log of each backend; keyword arguments are its options."""

    def factory(**options: object) -> EventLog:
        if request.param == "memory":
            return MemoryLog(**options)  # type: ignore[arg-type]
        if request.param == "redis":
            options.pop("memory_limit", None)
            return RedisLog(f"{url}/{database}", **options)  # type: ignore[arg-type]
        return SqliteLog(tmp_path / "data", **options)  # type: ignore[arg-type]

    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        database = next(_databases) % 16  # redis-server has 16 databases by default
        _flush(f"{url}/{database}")
    return factory


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
async def event_log(make_log: LogFactory) -> AsyncIterator[EventLog]:
    log = make_log()
    await log.open()
    yield log
    await log.close()
