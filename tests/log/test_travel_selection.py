"""Which events a travel returns, for every backend."""

from __future__ import annotations

import orjson
import pytest

from athena_cdc.log import memory, sqlite
from athena_cdc.log import redis as redis_log
from athena_cdc.log.base import EventLog, Gap, NewEvent, TravelQuery
from tests.log.conftest import LogFactory


async def fill(log: EventLog, channel: str, count: int) -> None:
    await log.append([NewEvent(channel, orjson.dumps(i)) for i in range(count)])


async def seqs(log: EventLog, query: TravelQuery) -> list[int]:
    return [e.seq for e in (await log.travel(query)).events]


async def test_since_seq_is_exclusive_and_picks_the_oldest(event_log: EventLog) -> None:
    await fill(event_log, "a", 10)
    assert await seqs(event_log, TravelQuery(("a",), 3, None, 4)) == [4, 5, 6, 7]
    result = await event_log.travel(TravelQuery(("a",), 3, None, 4))
    assert result.has_more
    result = await event_log.travel(TravelQuery(("a",), 6, None, 4))
    assert [e.seq for e in result.events] == [7, 8, 9, 10] and not result.has_more


async def test_no_cursor_picks_the_newest_oldest_first(event_log: EventLog) -> None:
    await fill(event_log, "a", 10)
    assert await seqs(event_log, TravelQuery(("a",), None, None, 3)) == [8, 9, 10]


async def test_since_ts_is_inclusive_and_combines_with_since_seq(
    event_log: EventLog, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    for ts in (100, 100, 200, 300, 300):
        monkeypatch.setattr(memory, "now_ms", lambda ts=ts: ts)
        monkeypatch.setattr(sqlite, "now_ms", lambda ts=ts: ts)
        monkeypatch.setattr(redis_log, "now_ms", lambda ts=ts: ts)
        await fill(event_log, "a", 1)
    assert await seqs(event_log, TravelQuery(("a",), None, 200, 10)) == [3, 4, 5]
    assert await seqs(event_log, TravelQuery(("a",), None, 300, 10)) == [4, 5]
    assert await seqs(event_log, TravelQuery(("a",), 4, 100, 10)) == [5]
    assert await seqs(event_log, TravelQuery(("a",), 1, 100, 10)) == [2, 3, 4, 5]
    assert await seqs(event_log, TravelQuery(("a",), None, 301, 10)) == []


async def test_several_channels_merge_by_time_then_channel_then_seq(
    event_log: EventLog,
) -> None:
    await event_log.append(
        [NewEvent(c, b"0") for c in ("b", "a", "b", "a")]
    )  # one tick: same ts for all
    result = await event_log.travel(TravelQuery(("b", "a"), 0, None, 3))
    assert [(e.channel, e.seq) for e in result.events] == [("a", 1), ("a", 2), ("b", 1)]
    assert result.has_more


async def test_unknown_channel_travels_empty(event_log: EventLog) -> None:
    result = await event_log.travel(TravelQuery(("nobody",), None, None, 10))
    assert result.events == [] and not result.has_more and result.gaps == []


async def test_gaps_name_what_retention_dropped(make_log: LogFactory) -> None:
    log = make_log(retention_events=5)
    await log.open()
    try:
        await fill(log, "a", 12)
        await log.prune()
        by_seq = await log.travel(TravelQuery(("a",), 2, None, 100))
        assert [(g.channel, g.from_seq, g.to_seq) for g in by_seq.gaps] == [("a", 3, 7)]
        assert [e.seq for e in by_seq.events] == [8, 9, 10, 11, 12]
        tail = await log.travel(TravelQuery(("a",), None, None, 8))
        assert [(g.from_seq, g.to_seq) for g in tail.gaps] == [(5, 7)]
        inside = await log.travel(TravelQuery(("a",), 9, None, 8))
        assert inside.gaps == []
    finally:
        await log.close()


async def test_paged_merge_of_many_channels_equals_the_whole_merge(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from athena_cdc.log import travel

    rng = random.Random(7)
    clock = [1_000]

    def tick() -> int:
        clock[0] += rng.choice([0, 0, 1, 5])
        return clock[0]

    monkeypatch.setattr(memory, "now_ms", tick)
    monkeypatch.setattr(sqlite, "now_ms", tick)
    monkeypatch.setattr(redis_log, "now_ms", tick)
    names = [f"ch{i}" for i in range(6)]
    for _ in range(120):
        await event_log.append(
            [NewEvent(rng.choice(names), b"1") for _ in range(rng.randint(1, 4))]
        )
    queries = [
        TravelQuery(tuple(names), None, None, 50),
        TravelQuery(tuple(names), 3, None, 40),
        TravelQuery(tuple(names), None, 1_100, 30),
        TravelQuery(tuple(names[:3]), 2, 1_050, 1000),
        TravelQuery(tuple(names), None, None, 1000, {n: 20 for n in names}),
        TravelQuery(("ch1",), None, None, 7),
        TravelQuery(("ch2",), 4, None, 11),
        TravelQuery(("ch3",), None, 1_080, 9, {"ch3": 30}),
    ]
    whole = [await event_log.travel(q) for q in queries]
    monkeypatch.setattr(travel, "MIN_PAGE", 1)  # tiny pages: every path pages
    monkeypatch.setattr(travel, "PAGE", 3)
    monkeypatch.setattr(travel, "FIRST_PAGE", 2)
    paged = [await event_log.travel(q) for q in queries]
    for a, b in zip(whole, paged, strict=True):
        assert [(e.channel, e.seq) for e in a.events] == [(e.channel, e.seq) for e in b.events]
        assert (a.has_more, a.gaps) == (b.has_more, b.gaps)
    keys = [(e.ts_ms, e.channel, e.seq) for e in whole[0].events]
    assert keys == sorted(keys) and len(keys) == 50


def test_a_read_that_starts_late_reports_the_gap_even_with_stale_bounds() -> None:
    from athena_cdc.log.base import ChannelBounds
    from athena_cdc.log.travel import retention_gap

    stale = ChannelBounds(first_seq=1, last_seq=200)  # pruned on disk, not yet seen here
    by_seq = TravelQuery(("a",), 0, None, 500)
    assert retention_gap("a", stale, by_seq, 101, reaches_start=True) == Gap("a", 1, 100)
    tail = TravelQuery(("a",), None, None, 150)
    assert retention_gap("a", stale, tail, 101, reaches_start=True) == Gap("a", 51, 100)
    # A small page of a multi-channel tail read says nothing about what was dropped.
    assert retention_gap("a", stale, tail, 101, reaches_start=False) is None
    # Nor does a time cursor: earlier seqs may simply be older than it.
    by_time = TravelQuery(("a",), 0, 5, 500)
    assert retention_gap("a", stale, by_time, 101, reaches_start=True) is None
