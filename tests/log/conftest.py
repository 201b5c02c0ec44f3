from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.sqlite import SqliteLog

LogFactory = Callable[..., EventLog]


@pytest.fixture(params=["memory", "sqlite"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> LogFactory:
    """Build an (unopened) log of each backend; keyword arguments are its options."""

    def factory(**options: object) -> EventLog:
        if request.param == "memory":
            return MemoryLog(**options)  # type: ignore[arg-type]
        return SqliteLog(tmp_path / "data", **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
async def event_log(make_log: LogFactory) -> AsyncIterator[EventLog]:
    log = make_log()
    await log.open()
    yield log
    await log.close()
