"""Which events a travel returns, for every backend."""

from __future__ import annotations

import orjson

from athena_cdc.log import memory, sqlite
from athena_cdc.log.base import EventLog, NewEvent, TravelQuery
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
