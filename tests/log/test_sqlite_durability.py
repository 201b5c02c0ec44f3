"""The sqlite log keeps every acknowledged event, across restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import websockets

from athena_cdc.log.base import NewEvent, StorageUnavailable, TravelQuery
from athena_cdc.log.sqlite import WRITER_SWITCH_INTERVAL_S, DataDirLocked, SqliteLog
from tests.support.servers import server_process


def new(channel: str, payload: object) -> NewEvent:
    return NewEvent(channel, orjson.dumps(payload))


async def test_restart_keeps_events_and_continues_seq(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    await log.append([new("a", i) for i in range(5)] + [new("b", "x")])
    await log.close()

    log = SqliteLog(tmp_path)
    await log.open()
    try:
        result = await log.travel(TravelQuery(("a",), 0, None, 100))
        assert [orjson.loads(e.message)["data"]["payload"] for e in result.events] == list(range(5))
        (event,) = await log.append([new("a", 5)])
        assert event.seq == 6
        assert log.bounds("b").last_seq == 1
    finally:
        await log.close()


async def test_cold_cache_reads_from_disk_what_the_cache_would_give(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    await log.append([new(f"c{i % 3}", i) for i in range(3000)])
    queries = [
        TravelQuery(("c0",), None, None, 100),
        TravelQuery(("c1",), 500, None, 50),
        TravelQuery(("c0", "c1", "c2"), None, 0, 2000),
        TravelQuery(("c2",), 10, 0, 7),
    ]
    warm = [await log.travel(q) for q in queries]
    await log.close()

    log = SqliteLog(tmp_path)
    await log.open()
    try:
        cold = [await log.travel(q) for q in queries]
    finally:
        await log.close()
    assert [[e.frame for e in r.events] for r in cold] == [
        [e.frame for e in r.events] for r in warm
    ]
    assert [r.has_more for r in cold] == [r.has_more for r in warm]


async def test_appends_in_one_tick_share_one_commit(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    try:
        await asyncio.gather(*(log.append([new("a", i)]) for i in range(500)))
        assert log.commits <= 3
    finally:
        await log.close()


async def test_failed_commit_appends_nothing_and_gives_seqs_back(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    try:
        await log.append([new("a", 0)])
        # Plant a row where seq 3 will go: the next commit fails on the primary key.
        side = sqlite3.connect(log.path)
        side.execute("INSERT INTO events VALUES (1, 3, 0, '0')")
        side.commit()
        with pytest.raises(StorageUnavailable):
            await log.append([new("a", 1), new("b", 1), new("a", 2)])
        assert log.health() is not None
        side.execute("DELETE FROM events WHERE seq = 3")
        side.commit()
        side.close()
        events = await log.append([new("a", 1), new("b", 1), new("a", 2)])
        assert [(e.channel, e.seq) for e in events] == [("a", 2), ("b", 1), ("a", 3)]
        assert log.health() is None
    finally:
        await log.close()


async def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = SqliteLog(tmp_path)
    await first.open()
    try:
        with pytest.raises(DataDirLocked, match="another athena-cdc"):
            await SqliteLog(tmp_path).open()
    finally:
        await first.close()


def test_time_lookup_uses_the_time_index_then_the_primary_key(tmp_path: Path) -> None:
    from athena_cdc.log.sqlite import SCHEMA

    con = sqlite3.connect(tmp_path / "plan.sqlite3")
    con.executescript(SCHEMA)
    plan = " ".join(
        row[3]
        for row in con.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE channel_id = 1 AND ts_ms >= 5 "
            "ORDER BY ts_ms, seq LIMIT 1"
        )
    )
    assert "events_by_time" in plan and "TEMP B-TREE" not in plan
    plan = " ".join(
        row[3]
        for row in con.execute(
            "EXPLAIN QUERY PLAN SELECT seq, ts_ms, payload FROM events "
            "WHERE channel_id = 1 AND seq BETWEEN 5 AND 9 ORDER BY seq LIMIT 10"
        )
    )
    assert "PRIMARY KEY" in plan and "TEMP B-TREE" not in plan


def post(base: str, body: object) -> dict[str, object]:
    request = urllib.request.Request(
        base + "/events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        result: dict[str, object] = json.loads(response.read())
        return result


async def travel_all(ws_url: str, channel: str) -> list[dict[str, object]]:
    async with websockets.connect(
        ws_url, additional_headers={"X-Athena-Client": channel}, max_size=None
    ) as ws:
        await ws.recv()  # subscribed
        await ws.send(json.dumps({"type": "travel", "since_seq": 0, "limit": 50000}))
        events: list[dict[str, object]] = []
        while True:
            message = json.loads(await ws.recv())
            if message.get("status") == "travel_complete":
                return events
            events.append(message["data"])


async def test_sigkill_after_201_loses_nothing_and_seq_continues(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    acknowledged: list[int] = []
    with server_process("--data-dir", data, log_path=tmp_path / "server.log") as server:
        for i in range(200):
            answer = post(server.base, [{"organization_id": "k", "payload": {"i": i}}])
            acknowledged.append(answer["events"][0]["seq"])  # type: ignore[index]
        batch = post(
            server.base, [{"organization_id": "k", "payload": {"i": 200 + j}} for j in range(300)]
        )
        acknowledged.extend(e["seq"] for e in batch["events"])  # type: ignore[attr-defined]
        server.kill()  # SIGKILL right after the last 201
    with server_process("--data-dir", data, log_path=tmp_path / "server.log") as server:
        events = await travel_all(server.ws, "k")
        assert [e["seq"] for e in events] == acknowledged == list(range(1, 501))
        assert [e["payload"] for e in events] == [{"i": i} for i in range(500)]
        answer = post(server.base, {"organization_id": "k", "payload": "after"})
        assert answer["events"][0]["seq"] == 501  # type: ignore[index]
        assert server.terminate() == 0


async def test_a_disk_read_after_restart_fills_the_cache(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.open()
    await log.append([new("a", i) for i in range(1000)])
    await log.close()

    log = SqliteLog(tmp_path)
    await log.open()
    try:
        tail = TravelQuery(("a",), None, None, 300)
        cold = await log.travel(tail)
        # The newest 300 are now cached: the same travel, and a page within it, no
        # longer need the disk (the reader pool is shut down to prove it).
        log._readers.shutdown()
        warm = await log.travel(tail)
        assert [e.frame for e in warm.events] == [e.frame for e in cold.events]
        page = await log.travel(TravelQuery(("a",), 900, None, 50))
        assert [e.seq for e in page.events] == list(range(901, 951))
        (event,) = await log.append([new("a", "next")])
        assert event.seq == 1001
    finally:
        log._readers = ThreadPoolExecutor(1)
        await log.close()


async def test_a_long_travel_from_a_cursor_after_restart_fills_the_cache(tmp_path: Path) -> None:
    """Read oldest first, page by page, the pages before the last one cannot join the
    cache on their own; they wait aside and join with it, so a repeat needs no disk."""
    log = SqliteLog(tmp_path)
    await log.open()
    await log.append([new("a", i) for i in range(5000)])
    await log.close()

    log = SqliteLog(tmp_path)
    await log.open()
    try:
        everything = TravelQuery(("a",), 0, None, 5000)
        cold = [e async for page in log.travel_reader(everything).pages() for e in page]
        assert [e.seq for e in cold] == list(range(1, 5001))
        log._readers.shutdown()  # from now on a disk read would fail
        warm = [e async for page in log.travel_reader(everything).pages() for e in page]
        assert [e.frame for e in warm] == [e.frame for e in cold]
        (event,) = await log.append([new("a", "next")])
        assert event.seq == 5001
    finally:
        log._readers = ThreadPoolExecutor(1)
        await log.close()


async def test_a_stash_of_pages_that_never_joins_stays_within_its_share(tmp_path: Path) -> None:
    """Pages kept aside count against the cache's bytes, and a run larger than its share
    (here: a small memory limit) is not kept at all."""
    log = SqliteLog(tmp_path, memory_limit=3 * 1024**2)
    await log.open()
    await log.append([new("a", "x" * 100) for _ in range(5000)])
    await log.close()

    log = SqliteLog(tmp_path, memory_limit=3 * 1024**2)
    await log.open()
    try:
        log.bounds("a")  # loaded (and reserved for) before the reads
        reserved = log._cache.reserved
        await log.read_channel("a", 0, None, 1000, False)
        assert log._stash is not None
        assert log._cache.reserved == reserved + log._stash[2]
        for since in range(1000, 4000, 1000):  # a run past 1/8 of the cache is dropped
            await log.read_channel("a", since, None, 1000, False)
        assert log._stash is None
        assert log._cache.reserved == reserved
    finally:
        await log.close()


async def test_an_open_log_has_the_loop_hand_the_gil_to_its_writer_soon(tmp_path: Path) -> None:
    """Commits need the GIL several times; a busy loop thread must not hold it for
    Python's default 5 ms each time. The process's setting comes back at close."""
    before = sys.getswitchinterval()
    log = SqliteLog(tmp_path)
    await log.open()
    try:
        assert sys.getswitchinterval() <= WRITER_SWITCH_INTERVAL_S
    finally:
        await log.close()
    assert sys.getswitchinterval() == before


async def test_age_retention_applies_to_events_written_before_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from athena_cdc.log import sqlite as sqlite_module

    now = [1_000_000]
    monkeypatch.setattr(sqlite_module, "now_ms", lambda: now[0])
    log = SqliteLog(tmp_path, retention_age=10.0)
    await log.open()
    await log.append([new("old", 1), new("old", 2), new("young", 1)])
    await log.close()

    now[0] += 60_000
    log = SqliteLog(tmp_path, retention_age=10.0)
    await log.open()
    try:
        await log.append([new("young", 2)])
        assert await log.prune() == 3  # both of "old" and the first of "young"
        assert log.bounds("old").first_seq == 3
        assert [e.seq for e in (await log.travel(TravelQuery(("young",), 0, None, 9))).events] == [
            2
        ]
        assert await log.prune() == 0
    finally:
        await log.close()
