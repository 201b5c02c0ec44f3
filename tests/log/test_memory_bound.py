"""--memory-limit bounds what the log holds in memory: events, rings and per-channel state."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from pathlib import Path

import orjson
import pytest

from athena_cdc.log import sqlite
from athena_cdc.log.base import Event, EventLog, NewEvent, StorageUnavailable, TravelQuery
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.ring import ChannelRing, RingSet
from athena_cdc.log.sqlite import SqliteLog
from tests.log.conftest import LogFactory

KIB = 1024


def new(channel: str, payload: object = 0) -> NewEvent:
    return NewEvent(channel, orjson.dumps(payload))


def event(channel: str, seq: int, size: int = 100) -> Event:
    return Event(channel, seq, 1_700_000_000_000 + seq, bytes(size))


async def everything(log: EventLog, channel: str) -> list[Event]:
    return (await log.travel(TravelQuery((channel,), 0, None, 50_000))).events


def test_a_dropped_frame_is_released_at_once() -> None:
    ring = ChannelRing("a")
    frames = [bytes([i + 1]) * 1000 for i in range(3)]
    for seq, frame in enumerate(frames, 1):
        ring.append(Event("a", seq, seq, frame))
    held = sys.getrefcount(frames[0])
    ring.drop_oldest()
    after = sys.getrefcount(frames[0])  # (not inside assert: its rewriting holds one)
    assert after == held - 1
    assert [e.frame for e in ring.select(None, None, 10, False)] == frames[1:]


def test_select_after_many_drops_still_maps_seqs() -> None:
    ring = ChannelRing("a")
    for seq in range(1, 1001):
        ring.append(event("a", seq))
        if seq > 7:
            ring.drop_oldest()
    assert [e.seq for e in ring.select(None, None, 100, True)] == list(range(994, 1001))
    assert [e.seq for e in ring.select(995, None, 2, False)] == [996, 997]


def test_the_set_stays_within_its_bytes_over_many_channels() -> None:
    rings = RingSet(per_channel=1_000, max_bytes=64 * KIB)
    for i in range(20_000):
        rings.add(event(f"channel-{i % 5_000}", i // 5_000 + 1))
        assert rings.bytes <= rings.max_bytes
    # Channels whose events were all evicted have no ring left.
    assert len(rings.rings) == len({ring.channel for ring in rings.rings.values()})
    assert len(rings.rings) < 5_000
    assert all(len(ring) for ring in rings.rings.values())


def test_a_ring_is_forgotten_when_its_last_event_goes() -> None:
    emptied: list[tuple[str, int]] = []
    rings = RingSet(2, 10**9, on_empty=lambda ring: emptied.append((ring.channel, ring.last_seq)))
    for seq in (1, 2, 3):
        rings.add(event("a", seq))
    rings.drop_through("a", 3)
    assert rings.ring("a") is None
    assert emptied == [("a", 3)]
    assert (rings.bytes, rings.events) == (0, 0)


def test_eviction_order_survives_rings_coming_and_going() -> None:
    # Stale order entries of a forgotten ring must not evict a newer ring's events.
    rings = RingSet(per_channel=3, max_bytes=10**9)
    for seq in range(1, 11):
        rings.add(event("a", seq))  # the count bound drops 7 of them: stale entries
    rings.drop_through("a", 10)
    for seq in (11, 12):
        rings.add(event("a", seq))
    rings.add(event("b", 1))
    rings.max_bytes = rings.bytes - 1  # one eviction: the node's oldest held event
    rings.fit()
    ring_a = rings.ring("a")
    assert ring_a is not None and ring_a.first_seq == 12
    assert rings.ring("b") is not None


async def test_memory_store_keeps_seq_of_a_channel_whose_events_were_all_evicted() -> None:
    log = MemoryLog(memory_limit=64 * KIB)
    await log.open()
    try:
        await log.append([new("old", i) for i in range(5)])
        for i in range(200):  # evicts every event of "old"
            await log.append([new(f"flood-{i % 20}", "x" * 1000)])
        assert await everything(log, "old") == []
        bounds = log.bounds("old")
        assert (bounds.first_seq, bounds.last_seq) == (6, 5)
        (appended,) = await log.append([new("old")])
        assert appended.seq == 6
        assert log.stats().bytes <= 64 * KIB
    finally:
        await log.close()


async def test_memory_store_refuses_new_channels_when_their_counters_fill_half() -> None:
    limit = 256 * KIB
    log = MemoryLog(memory_limit=limit)
    await log.open()
    try:
        refused = 0
        for i in range(3_000):
            try:
                await log.append([new(f"channel-{i}")])
            except StorageUnavailable as exc:
                assert "--memory-limit" in str(exc)
                refused += 1
            assert log.stats().bytes <= limit
        assert refused > 1_000
        # All or nothing: a batch naming a new channel appends nothing at all.
        with pytest.raises(StorageUnavailable):
            await log.append([new("channel-0"), new("never-seen")])
        assert log.bounds("channel-0").last_seq == 1
        # Known channels keep working, and keep their seqs.
        (again,) = await log.append([new("channel-0")])
        assert again.seq == 2
    finally:
        await log.close()


async def test_travel_and_bounds_hold_whatever_memory_dropped(make_log: LogFactory) -> None:
    log = make_log(memory_limit=32 * KIB)
    await log.open()
    try:
        await log.append([new("a", i) for i in range(3)])
        for i in range(100):
            await log.append([new(f"b{i % 20}", "y" * 1000)])
        await log.append([new("a", 3)])
        seqs = [e.seq for e in await everything(log, "a")]
        # memory: the flood evicted a's first events; sqlite: the disk has them all
        assert seqs == ([4] if isinstance(log, MemoryLog) else [1, 2, 3, 4])
        assert log.bounds("a").last_seq == 4
    finally:
        await log.close()


async def test_sqlite_reopens_without_loading_any_channel(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, retention_events=5)
    await log.open()
    await log.append([new(f"c{i}", i) for i in range(100)] + [new("c0", j) for j in range(9)])
    await log.close()

    log = SqliteLog(tmp_path, retention_events=5)
    await log.open()
    try:
        assert (len(log._disk), len(log._channels), len(log._cache.rings)) == (0, 0, 0)
        assert (log.stats().channels, log.stats().events) == (100, 109)
        bounds = log.bounds("c0")  # loaded when asked
        assert (bounds.first_seq, bounds.last_seq) == (1, 10)
        assert len(log._disk) == 1
        (appended,) = await log.append([new("c0")])
        assert appended.seq == 11
        assert [e.seq for e in await everything(log, "c1")] == [1]
        # Count retention applies to a channel appended to after the restart.
        await log.prune()
        assert [e.seq for e in await everything(log, "c0")] == [7, 8, 9, 10, 11]
        assert log.bounds("c0").first_seq == 7
        assert log.bounds("unknown").last_seq == 0
    finally:
        await log.close()


async def test_sqlite_per_channel_state_stays_within_the_limit(tmp_path: Path) -> None:
    limit = 256 * KIB
    log = SqliteLog(tmp_path, memory_limit=limit)
    await log.open()
    try:
        for start in range(0, 6_000, 1_000):
            await log.append([new(f"channel-{i}", i) for i in range(start, start + 1_000)])
            for i in range(start, start + 1_000, 97):
                log.bounds(f"channel-{i}")
            cache = log._cache
            assert cache.bytes + cache.reserved <= limit
        assert len(log._disk) < 6_000 and len(log._channels) < 6_000
        # A forgotten channel is read back from disk: its seqs go on.
        (appended,) = await log.append([new("channel-0")])
        assert appended.seq == 2
        assert [e.seq for e in await everything(log, "channel-0")] == [1, 2]
    finally:
        await log.close()


async def test_sqlite_bounds_during_a_commit_answer_what_the_hub_was_told(
    tmp_path: Path,
) -> None:
    # Between the commit and the hub hearing of it, a travel must not see the new
    # events in bounds() (it would send them, and then the hub would send them again).
    log = SqliteLog(tmp_path, memory_limit=64 * KIB)
    await log.open()
    try:
        await log.append([new("a", 1)])
        await log.append([new(f"other-{i}") for i in range(2_000)])
        assert "a" not in log._disk  # pushed out of memory by the others
        committed, release = threading.Event(), threading.Event()
        write = log._write

        def slow_write(work):  # type: ignore[no-untyped-def]
            result = write(work)
            committed.set()
            release.wait(10)
            return result

        log._write = slow_write  # type: ignore[method-assign]
        appending = asyncio.create_task(log.append([new("a", 2)]))
        await asyncio.get_running_loop().run_in_executor(None, committed.wait, 10)
        assert log.bounds("a").last_seq == 1  # the disk already has seq 2
        release.set()
        (appended,) = await appending
        assert appended.seq == 2
        assert log.bounds("a").last_seq == 2
    finally:
        await log.close()


async def test_sqlite_background_age_retention_reaches_every_channel_a_slice_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000]
    monkeypatch.setattr(sqlite, "now_ms", lambda: now[0])
    monkeypatch.setattr(sqlite, "AGE_SWEEP_CHANNELS", 2)
    log = SqliteLog(tmp_path, retention_age=10.0)
    await log.open()
    try:
        await log.append([new(f"c{i}", "old") for i in range(5)])
        now[0] += 20_000
        await log.append([new("c0", "new")])
        dropped = [await log.prune(sweep_all=False) for _ in range(3)]
        assert dropped == [2, 2, 1]  # channel ids 1-2, 3-4, 5
        assert [e.seq for e in await everything(log, "c0")] == [2]
        assert all(log.bounds(f"c{i}").first_seq == 2 for i in range(5))
        assert await log.prune(sweep_all=False) == 0  # the sweep starts over, finds none
    finally:
        await log.close()


async def test_sqlite_bounds_of_a_channel_on_a_failing_disk_leave_the_travel_to_fail(
    tmp_path: Path,
) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    try:
        await log.append([new("a")])
        log._disk.clear()
        log._cache.rings.clear()

        class Broken:
            def execute(self, *args: object) -> None:
                raise sqlite3.OperationalError("disk I/O error")

            def close(self) -> None:
                pass

        log._loop_con = Broken()  # type: ignore[assignment]
        assert log.bounds("a").last_seq == 0  # no exception where travels begin
        with pytest.raises(StorageUnavailable):
            await log.read_channel("a", None, None, 10, True)
    finally:
        await log.close()
