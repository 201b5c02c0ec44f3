"""Storage errors are logged once per kind per second, not once per request."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.logging_limits import RateLimitedLog
from tests.protocol._support import client, event, publish
from tests.support.servers import http_url, running_server

TRAVELS = 5_000
POSTS = 500


async def test_5000_failing_requests_log_a_handful_of_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    # A 2 KiB cache holds almost nothing: every travel reads the disk.
    async with running_server(
        store="sqlite", data_dir=str(tmp_path), memory_limit=2048, client_rate_limit=None
    ) as srv:
        await publish(srv, [event("d", i) for i in range(100)])
        assert isinstance(srv.log, SqliteLog)
        side = sqlite3.connect(srv.log.path)
        side.execute("ALTER TABLE events RENAME TO events_elsewhere")  # reads and writes fail
        side.commit()
        started = time.monotonic()
        async with client(srv, "d") as c:
            for _ in range(TRAVELS):
                await c.send_raw('{"type":"travel","since_seq":0}')
            replies = [await c.recv(within=30) for _ in range(TRAVELS)]
        assert {(r["status"], r["error"]) for r in replies} == {("error", "unavailable")}
        async with aiohttp.ClientSession() as http:

            async def post() -> int:
                async with http.post(
                    http_url(srv, "/events"), json={"organization_id": "d", "payload": 1}
                ) as response:
                    return response.status

            statuses = await asyncio.gather(*(post() for _ in range(POSTS)))
        assert set(statuses) == {503}
        elapsed = time.monotonic() - started
        side.execute("ALTER TABLE events_elsewhere RENAME TO events")
        side.commit()
        side.close()
    failures = [r for r in caplog.records if r.name.startswith("athena_cdc")]
    kinds = {str(r.msg).split(" (and ")[0] for r in failures}
    assert kinds == {"sqlite read failed: %s", "sqlite write failed, %d appends rejected: %s"}
    # At most one record per kind per second (two kinds), whatever the machine's speed.
    assert len(failures) <= 2 * (int(elapsed) + 2), (elapsed, [r.getMessage() for r in failures])
    assert not [r for r in failures if r.exc_info], "storage errors need no traceback"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_held_back_for_the_interval_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("tests.limits"), interval=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.limits"):
        for i in range(1000):
            limited.error("disk failed: %s", i)
            clock.now += 0.0009  # 0.9 s in all
        limited.warning("another kind: %s", "x")  # not held back by the first kind
        clock.now += 0.2
        limited.error("disk failed: %s", "again")
    assert [r.getMessage() for r in caplog.records] == [
        "disk failed: 0",
        "another kind: x",
        "disk failed: again (and 999 more like it in the last 1 s, not logged)",
    ]
    assert caplog.records[-1].levelno == logging.ERROR
    assert (
        caplog.records[0].funcName
        == test_repeats_are_held_back_for_the_interval_then_counted.__name__
    )


def test_exceptions_of_different_types_are_different_kinds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("tests.limits"), interval=1.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="tests.limits"):
        for error in [ValueError, ValueError, KeyError, ValueError, KeyError] * 100:
            try:
                raise error("boom")
            except Exception:
                limited.exception("handling %s failed", "x")
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError, KeyError]
