"""The event log invariants of the protocol page, for every backend."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from athena_cdc.log import memory, redis, sqlite
from athena_cdc.log.base import Event, EventLog, NewEvent, SourcePosition, TravelQuery
from tests.log.conftest import LogFactory


def new(channel: str, payload: object) -> NewEvent:
    return NewEvent(channel, orjson.dumps(payload))


async def everything(log: EventLog, channel: str) -> list[Event]:
    result = await log.travel(TravelQuery((channel,), 0, None, 50_000))
    return result.events


async def test_seq_starts_at_one_and_grows_by_one_per_channel(event_log: EventLog) -> None:
    await event_log.append([new("a", 1), new("b", 1), new("a", 2)])
    await event_log.append([new("a", 3)])
    assert [e.seq for e in await everything(event_log, "a")] == [1, 2, 3]
    assert [e.seq for e in await everything(event_log, "b")] == [1]


async def test_append_returns_events_in_input_order(event_log: EventLog) -> None:
    events = await event_log.append([new("a", 1), new("b", 1), new("a", 2)])
    assert [(e.channel, e.seq) for e in events] == [("a", 1), ("b", 1), ("a", 2)]


async def test_concurrent_appends_get_distinct_contiguous_seqs(event_log: EventLog) -> None:
    results = await asyncio.gather(*(event_log.append([new("a", i)]) for i in range(300)))
    seqs = sorted(e.seq for events in results for e in events)
    assert seqs == list(range(1, 301))


async def test_ts_never_decreases_when_the_clock_steps_back(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([5_000, 4_000, 3_000, 6_000])
    fake = lambda: next(clock)  # noqa: E731
    monkeypatch.setattr(memory, "now_ms", fake)
    monkeypatch.setattr(sqlite, "now_ms", fake)
    monkeypatch.setattr(redis, "now_ms", fake)
    for i in range(4):
        await event_log.append([new("a", i)])
    assert [e.ts_ms for e in await everything(event_log, "a")] == [5_000, 5_000, 5_000, 6_000]


async def test_payload_is_returned_as_given(event_log: EventLog) -> None:
    payloads: list[object] = [
        {"nested": {"list": [1, 2.5, None, True], "text": "é ✓ \u2028"}},
        "string",
        12345678901234,
        None,
        [],
        {"z": 1, "a": 2},  # key order is kept
    ]
    await event_log.append([new("a", p) for p in payloads])
    got = [orjson.loads(e.message)["data"]["payload"] for e in await everything(event_log, "a")]
    assert got == payloads
    raw = (await everything(event_log, "a"))[5].message
    assert raw.endswith(b'"payload":{"z":1,"a":2}}}')


async def test_retention_by_count_drops_only_the_oldest(make_log: LogFactory) -> None:
    log = make_log(retention_events=3)
    await log.open()
    try:
        for i in range(10):
            await log.append([new("a", i)])
        await log.prune()
        events = await everything(log, "a")
        assert [e.seq for e in events] == [8, 9, 10]
        # seq is never reused after retention dropped events
        (appended,) = await log.append([new("a", 10)])
        assert appended.seq == 11
    finally:
        await log.close()


async def test_retention_by_age_drops_old_events(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000]
    monkeypatch.setattr(memory, "now_ms", lambda: now[0])
    monkeypatch.setattr(sqlite, "now_ms", lambda: now[0])
    monkeypatch.setattr(redis, "now_ms", lambda: now[0])
    log = make_log(retention_age=10.0)
    await log.open()
    try:
        await log.append([new("a", "old")])
        now[0] += 20_000
        await log.append([new("a", "new")])
        dropped = await log.prune()
        assert dropped == 1
        assert [e.seq for e in await everything(log, "a")] == [2]
        result = await log.travel(TravelQuery(("a",), 0, None, 10))
        assert [(g.from_seq, g.to_seq) for g in result.gaps] == [(1, 1)]
    finally:
        await log.close()


async def test_position_is_recorded_with_the_events(event_log: EventLog) -> None:
    assert await event_log.get_position("pg") is None
    await event_log.append([new("a", 1)], SourcePosition("pg", "0/10"))
    await event_log.append([new("a", 2)], SourcePosition("pg", "0/20"))
    assert await event_log.get_position("pg") == "0/20"


async def test_listeners_hear_of_events_after_append_in_order(event_log: EventLog) -> None:
    heard: list[tuple[str, int]] = []
    event_log.add_listener(lambda events: heard.extend((e.channel, e.seq) for e in events))
    await asyncio.gather(*(event_log.append([new("a", i), new("b", i)]) for i in range(20)))
    if event_log.shared:
        # A shared log may deliver a process's own first appends on a channel through
        # its pub/sub (another process's earlier seq could still be on its way): wait.
        for _ in range(250):
            if len(heard) == 40:
                break
            await asyncio.sleep(0.02)
    assert [s for c, s in heard if c == "a"] == list(range(1, 21))
    assert [s for c, s in heard if c == "b"] == list(range(1, 21))


async def test_memory_log_respects_its_global_memory_bound() -> None:
    log = memory.MemoryLog(retention_events=1_000_000, memory_limit=64 * 1024)
    for i in range(2_000):
        await log.append([new(f"c{i % 7}", "x" * 100)])
    assert log.stats().bytes <= 64 * 1024
    # the oldest events went first, in every channel
    for c in range(7):
        events = await everything(log, f"c{c}")
        assert events[-1].seq == len([i for i in range(2_000) if i % 7 == c])


async def test_memory_bookkeeping_stays_bounded_by_what_is_retained() -> None:
    log = memory.MemoryLog(retention_events=100)
    for i in range(20_000):
        await log.append([new(f"c{i % 3}", i)])
    assert log.stats().events == 300
    assert len(log._rings._order) <= 2 * 300 + 1024 + 1
