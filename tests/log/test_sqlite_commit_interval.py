"""--sqlite-commit-interval: back-to-back appends share a commit; a lone one is not held."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from athena_cdc.log.base import NewEvent
from athena_cdc.log.sqlite import SqliteLog

INTERVAL = 0.2  # long enough that a slow machine's fsync cannot hide the wait


async def test_appends_arriving_within_the_interval_of_the_last_commit_share_the_next_one(
    tmp_path: Path,
) -> None:
    log = SqliteLog(tmp_path, commit_interval=INTERVAL)
    await log.open()
    try:
        await log.append([NewEvent("c", b"0")])
        commits = log.commits
        # Five producers, one event each, one after another within the interval.
        appends = []
        for i in range(5):
            appends.append(asyncio.ensure_future(log.append([NewEvent("c", b"%d" % (i + 1))])))
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*appends)
        assert [events[0].seq for events in results] == [2, 3, 4, 5, 6]
        assert log.commits == commits + 1  # all five in one commit
    finally:
        await log.close()


async def test_an_append_after_a_quiet_spell_is_committed_at_once(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, commit_interval=INTERVAL)
    await log.open()
    try:
        await log.append([NewEvent("c", b"0")])
        await asyncio.sleep(INTERVAL)  # the interval has passed: nothing to wait for
        started = time.monotonic()
        await log.append([NewEvent("c", b"1")])
        assert time.monotonic() - started < INTERVAL / 2
    finally:
        await log.close()


async def test_without_an_interval_each_append_after_a_commit_starts_the_next(
    tmp_path: Path,
) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    try:
        for i in range(3):
            await log.append([NewEvent("c", b"%d" % i)])
        assert log.commits == 3
    finally:
        await log.close()
