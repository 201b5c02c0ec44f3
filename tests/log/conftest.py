from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.redis import RedisLog
from athena_cdc.log.sqlite import SqliteLog
from tests.conftest import flush_redis

LogFactory = Callable[..., EventLog]


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
        flush_redis(f"{url}/{database}")
    return factory


@pytest.fixture
async def event_log(make_log: LogFactory) -> AsyncIterator[EventLog]:
    log = make_log()
    await log.open()
    yield log
    await log.close()
