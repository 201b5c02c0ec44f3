"""Travel (replay): cursors, tail vs head, limits, merge, ack, gaps, hold-back, order."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from athena_cdc import slicing
from athena_cdc.log.base import NewEvent
from athena_cdc.server.app import AthenaServer
from tests.protocol._support import Client, client, event, publish, publish_many, seqs
from tests.support.servers import running_server

ACK_KEYS = [
    "status",
    "organization_id",
    "since_seq",
    "since_ts_ms",
    "limit",
    "count",
    "has_more",
    "gaps",
    "epoch",
]


async def fill(server: AthenaServer, channel: str, count: int, chunk: int = 10_000) -> None:
    async with aiohttp.ClientSession() as http:
        done = 0
        while done < count:
            size = min(chunk, count - done)
            await publish(server, [event(channel, done + i) for i in range(size)], session=http)
            done += size


async def spread(server: AthenaServer, channel: str, groups: int, per_group: int) -> None:
    """Publish ``groups`` batches a few milliseconds apart, so ts_ms values differ."""
    for g in range(groups):
        await publish_many(server, channel, [g * per_group + i for i in range(per_group)])
        await asyncio.sleep(0.004)


def assert_ack(ack: dict[str, Any], **expected: Any) -> None:
    assert list(ack) == ACK_KEYS, ack
    assert ack["status"] == "travel_complete"
    for key, value in expected.items():
        assert ack[key] == value, (key, ack)
    assert ack["count"] >= 0


async def test_since_seq_is_exclusive(server: AthenaServer) -> None:
    await fill(server, "a", 20)
    async with client(server, "a") as c:
        events, ack = await c.travel(since_seq=5)
        assert seqs(events) == list(range(6, 21))
        assert_ack(ack, organization_id=None, since_seq=5, since_ts_ms=None, limit=10_000, count=15)
        assert ack["has_more"] is False and ack["gaps"] == []
        assert seqs((await c.travel(since_seq=0))[0]) == list(range(1, 21))
        assert seqs((await c.travel(since_seq=19))[0]) == [20]
        for beyond in (20, 21, 10**6):
            events, ack = await c.travel(since_seq=beyond)
            assert events == [] and ack["count"] == 0 and ack["has_more"] is False


async def test_since_ts_ms_is_inclusive(server: AthenaServer) -> None:
    await spread(server, "a", groups=5, per_group=3)
    async with client(server, "a") as c:
        everything, _ = await c.travel(since_seq=0)
        assert len(everything) == 15
        stamps = sorted({e["data"]["ts_ms"] for e in everything})
        assert len(stamps) >= 3, "groups published milliseconds apart must differ in ts_ms"
        for ts in stamps:
            events, ack = await c.travel(since_ts_ms=ts)
            assert events == [e for e in everything if e["data"]["ts_ms"] >= ts]
            assert ack["since_ts_ms"] == ts and ack["since_seq"] is None
        events, _ = await c.travel(since_ts_ms=stamps[-1] + 1)
        assert events == []
        events, _ = await c.travel(since_ts_ms=0)
        assert events == everything


async def test_since_seq_and_since_ts_ms_must_both_hold(server: AthenaServer) -> None:
    await spread(server, "a", groups=4, per_group=5)
    async with client(server, "a") as c:
        everything, _ = await c.travel(since_seq=0)
        stamps = sorted({e["data"]["ts_ms"] for e in everything})
        for since_seq in (0, 3, 7, 12, 19):
            for ts in stamps:
                events, ack = await c.travel(since_seq=since_seq, since_ts_ms=ts)
                assert events == [
                    e
                    for e in everything
                    if e["data"]["seq"] > since_seq and e["data"]["ts_ms"] >= ts
                ]
                assert_ack(ack, since_seq=since_seq, since_ts_ms=ts, count=len(events))


async def test_without_cursor_the_newest_limit_events_oldest_first(server: AthenaServer) -> None:
    await fill(server, "a", 30)
    async with client(server, "a") as c:
        events, ack = await c.travel(limit=5)
        assert seqs(events) == [26, 27, 28, 29, 30]
        assert_ack(ack, limit=5, count=5, has_more=True)
        events, ack = await c.travel(limit=30)
        assert seqs(events) == list(range(1, 31)) and ack["has_more"] is False
        events, ack = await c.travel(limit=31)
        assert len(events) == 30 and ack["has_more"] is False


async def test_with_a_cursor_the_oldest_limit_events_after_it(server: AthenaServer) -> None:
    await fill(server, "a", 30)
    async with client(server, "a") as c:
        events, ack = await c.travel(since_seq=0, limit=5)
        assert seqs(events) == [1, 2, 3, 4, 5] and ack["has_more"] is True
        events, ack = await c.travel(since_seq=10, limit=5)
        assert seqs(events) == [11, 12, 13, 14, 15] and ack["has_more"] is True
        events, ack = await c.travel(since_ts_ms=0, limit=5)
        assert seqs(events) == [1, 2, 3, 4, 5] and ack["has_more"] is True
        events, ack = await c.travel(since_seq=25, limit=5)
        assert seqs(events) == [26, 27, 28, 29, 30] and ack["has_more"] is False


async def test_paging_forward_with_since_seq_sees_everything_once(server: AthenaServer) -> None:
    await fill(server, "a", 95)
    async with client(server, "a") as c:
        seen: list[int] = []
        cursor = 0
        while True:
            events, ack = await c.travel(since_seq=cursor, limit=10)
            seen += seqs(events)
            if not ack["has_more"]:
                break
            cursor = seen[-1]
        assert seen == list(range(1, 96))


async def test_default_limit_is_10000(server: AthenaServer) -> None:
    await fill(server, "a", 10_005)
    async with client(server, "a") as c:
        events, ack = await c.travel()
        assert seqs(events) == list(range(6, 10_006))
        assert_ack(ack, limit=10_000, count=10_000, has_more=True)
        events, ack = await c.travel(since_seq=0)
        assert seqs(events) == list(range(1, 10_001)) and ack["has_more"] is True


async def test_limit_above_50000_is_clamped_and_the_ack_says_so(server: AthenaServer) -> None:
    await fill(server, "a", 50_001)
    async with client(server, "a") as c:
        events, ack = await c.travel(limit=60_000)
        assert len(events) == 50_000 and events[0]["data"]["seq"] == 2
        assert seqs(events) == list(range(2, 50_002))
        assert_ack(ack, limit=50_000, count=50_000, has_more=True)
        _, ack = await c.travel(limit=10**12, since_seq=49_990)
        assert_ack(ack, limit=50_000, count=11, has_more=False)


async def subscribe(c: Client, *channels: str) -> None:
    for channel in channels:
        reply = await c.request({"type": "subscribe", "organization_id": channel})
        assert reply["status"] == "subscribed"


def merge_key(e: dict[str, Any]) -> tuple[int, str, int]:
    return (e["data"]["ts_ms"], e["organization_id"], e["data"]["seq"])


async def test_several_channels_merge_by_ts_channel_seq(server: AthenaServer) -> None:
    async with client(server, "a") as c:
        await subscribe(c, "b", "c")
        for round_ in range(4):
            # One batch: the same ts_ms for all, so the channel name breaks the tie.
            await publish(
                server,
                [
                    event("c", round_),
                    event("b", round_),
                    event("d", round_),
                    event("a", round_),
                    event("c", round_),
                    event("b", round_),
                ],
            )
            await asyncio.sleep(0.004)
        live = await c.recv_events(20)
        events, ack = await c.travel()
        assert {e["organization_id"] for e in events} == {"a", "b", "c"}
        assert len(events) == 20 and ack["count"] == 20
        assert events == sorted(live, key=merge_key)
        assert [merge_key(e) for e in events] == sorted(merge_key(e) for e in events)
        first_ts = events[0]["data"]["ts_ms"]
        assert [(e["organization_id"], e["data"]["seq"]) for e in events[:5]] == [
            ("a", 1),
            ("b", 1),
            ("b", 2),
            ("c", 1),
            ("c", 2),
        ]
        assert all(e["data"]["ts_ms"] == first_ts for e in events[:5])


async def test_limit_counts_all_channels_together(server: AthenaServer) -> None:
    async with client(server, "a") as c:
        await subscribe(c, "b")
        for i in range(6):
            await publish(server, [event("a", i), event("b", i)])
            await asyncio.sleep(0.003)
        await c.recv_events(12)
        everything, _ = await c.travel(since_seq=0)
        assert len(everything) == 12
        events, ack = await c.travel(limit=5)
        assert events == everything[-5:]
        assert_ack(ack, limit=5, count=5, has_more=True)
        events, ack = await c.travel(since_seq=0, limit=5)
        assert events == everything[:5]
        assert ack["has_more"] is True
        events, ack = await c.travel(since_seq=4, limit=3)
        assert events == [e for e in everything if e["data"]["seq"] > 4][:3]
        events, ack = await c.travel(limit=12)
        assert events == everything and ack["has_more"] is False


async def test_explicit_channel_not_subscribed_is_replayed(server: AthenaServer) -> None:
    await fill(server, "elsewhere", 7)
    await fill(server, "a", 3)
    async with client(server, "a") as c:
        events, ack = await c.travel(organization_id="elsewhere", since_seq=2)
        assert seqs(events) == [3, 4, 5, 6, 7]
        assert {e["organization_id"] for e in events} == {"elsewhere"}
        assert_ack(ack, organization_id="elsewhere", since_seq=2, since_ts_ms=None)
        # It did not subscribe.
        await publish(server, [event("elsewhere", "x"), event("a", "y")])
        [live] = await c.recv_events(1)
        assert live["organization_id"] == "a"


async def test_unknown_channel_replays_nothing(server: AthenaServer) -> None:
    async with client(server, "a") as c:
        events, ack = await c.travel(organization_id="nobody-here")
        assert events == []
        assert_ack(ack, organization_id="nobody-here", count=0, has_more=False, gaps=[])


async def test_null_fields_are_absent_fields(server: AthenaServer) -> None:
    await fill(server, "a", 4)
    async with client(server, "a") as c:
        events, ack = await c.travel(
            organization_id=None, since_seq=None, since_ts_ms=None, limit=None
        )
        assert seqs(events) == [1, 2, 3, 4]
        assert_ack(ack, organization_id=None, since_seq=None, since_ts_ms=None, limit=10_000)


async def test_ack_exact_form(server: AthenaServer) -> None:
    await fill(server, "a", 3)
    async with client(server, "a") as c:
        await c.send({"type": "travel", "organization_id": "a", "since_seq": 1, "limit": 1})
        await c.recv()
        raw = await c.recv_raw()
        assert raw == (
            '{"status":"travel_complete","organization_id":"a","since_seq":1,'
            '"since_ts_ms":null,"limit":1,"count":1,"has_more":true,"gaps":[],'
            f'"epoch":"{server.log.epoch}"}}'
        )


async def test_replayed_events_have_the_live_form(server: AthenaServer) -> None:
    async with client(server, "a") as c:
        await publish(server, event("a", {"x": [1, 2.5, "é"]}))
        live = await c.recv_raw()
        await c.send({"type": "travel"})
        assert await c.recv_raw() == live


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_gaps_report_what_retention_dropped(store: str, tmp_path: Path) -> None:
    async with running_server(
        store=store, data_dir=str(tmp_path / "data"), retention_events=5
    ) as srv:
        await fill(srv, "g", 20, chunk=3)
        async with client(srv, "g") as c:
            for _ in range(100):  # sqlite applies retention in the background
                events, ack = await c.travel(since_seq=0)
                if seqs(events) == [16, 17, 18, 19, 20]:
                    break
                await asyncio.sleep(0.05)
            assert seqs(events) == [16, 17, 18, 19, 20]
            assert ack["gaps"] == [{"organization_id": "g", "from_seq": 1, "to_seq": 15}]
            assert list(ack["gaps"][0]) == ["organization_id", "from_seq", "to_seq"]
            _, ack = await c.travel(since_seq=10)
            assert ack["gaps"] == [{"organization_id": "g", "from_seq": 11, "to_seq": 15}]
            _, ack = await c.travel(since_seq=15)
            assert ack["gaps"] == []
            events, ack = await c.travel(limit=3)
            assert seqs(events) == [18, 19, 20] and ack["gaps"] == []
            events, ack = await c.travel(limit=10)
            assert seqs(events) == [16, 17, 18, 19, 20]
            assert ack["gaps"] == [{"organization_id": "g", "from_seq": 11, "to_seq": 15}]
            events, ack = await c.travel(since_ts_ms=0)
            assert seqs(events) == [16, 17, 18, 19, 20]
            [gap] = ack["gaps"]
            assert gap["to_seq"] == 15 and gap["from_seq"] == 1
            # seq keeps growing after retention.
            await publish(srv, event("g", "next"))
            [live] = await c.recv_events(1)
            assert live["data"]["seq"] == 21


@pytest.mark.parametrize("store", ["memory", "sqlite", "sqlite-small-cache"])
async def test_live_events_are_held_back_during_a_travel(store: str, tmp_path: Path) -> None:
    # With a small cache, sqlite answers the travel from disk, in another thread.
    settings: dict[str, Any] = {"store": store.split("-")[0], "data_dir": str(tmp_path / "d")}
    if store == "sqlite-small-cache":
        settings["memory_limit"] = 256 * 1024
    async with running_server(**settings) as server:
        await check_hold_back(server)


async def check_hold_back(server: AthenaServer) -> None:
    backlog, extra = 20_000, 3_000
    await fill(server, "h", backlog)
    async with client(server, "h") as c:

        async def produce() -> None:
            async with aiohttp.ClientSession() as http:
                for i in range(extra // 10):
                    await publish(server, [event("h", i)] * 10, session=http)

        await c.send({"type": "travel", "since_seq": 0, "limit": 50_000})
        producer = asyncio.create_task(produce())
        before_ack, ack = await c.read_travel()
        await producer
        total = backlog + extra
        assert ack["has_more"] is False
        # Events published before the server began the travel may arrive live first.
        prefix_len = next(i for i, e in enumerate(before_ack) if e["data"]["seq"] == 1)
        prefix, replayed = before_ack[:prefix_len], before_ack[prefix_len:]
        last_replayed = replayed[-1]["data"]["seq"]
        assert seqs(replayed) == list(range(1, last_replayed + 1))
        assert ack["count"] == len(replayed)
        if prefix:
            assert seqs(prefix) == list(range(backlog + 1, prefix[-1]["data"]["seq"] + 1))
            assert prefix[-1]["data"]["seq"] <= last_replayed
        after = await c.recv_events(total - last_replayed, within=20)
        assert seqs(after) == list(range(last_replayed + 1, total + 1))
        await c.expect_silence(0.2)
        assert last_replayed < total, "the travel should have overlapped the publishing"


async def test_several_travels_are_answered_in_order(server: AthenaServer) -> None:
    await fill(server, "a", 3_000)
    async with client(server, "a") as c:
        asks: list[dict[str, Any]] = [
            {"since_seq": 0, "limit": 2_000},
            {"limit": 1},
            {"since_seq": 2_990},
            {"since_seq": 100, "limit": 50},
            {"organization_id": "nobody"},
        ]
        for ask in asks:
            await c.send({"type": "travel", **ask})
        answers = [await c.read_travel() for _ in asks]
        assert [ack["since_seq"] for _, ack in answers] == [0, None, 2_990, 100, None]
        assert [ack["limit"] for _, ack in answers] == [2_000, 1, 10_000, 50, 10_000]
        assert seqs(answers[0][0]) == list(range(1, 2_001))
        assert seqs(answers[1][0]) == [3_000]
        assert seqs(answers[2][0]) == list(range(2_991, 3_001))
        assert seqs(answers[3][0]) == list(range(101, 151))
        assert answers[4][0] == [] and answers[4][1]["organization_id"] == "nobody"


async def test_travel_does_not_disturb_later_live_events(server: AthenaServer) -> None:
    await fill(server, "a", 10)
    async with client(server, "a") as c:
        await c.travel()
        await publish(server, event("a", "after"))
        [got] = await c.recv_events(1)
        assert got["data"]["seq"] == 11 and got["data"]["payload"] == "after"
        assert json.loads(json.dumps(got)) == got


async def test_events_appended_while_a_tail_travel_reads_the_disk_arrive_in_order(
    tmp_path: Path,
) -> None:
    """A travel answered from disk (in another thread) while producers append.

    The reader is slowed down so that events committed during the travel are both held
    (they are live events of a subscribed channel) and visible to the read. Whatever the
    server picks, each new event must reach the client once and in seq order.
    """
    # A cache of 300 bytes holds fewer than 3 events: a travel of 3 reads the file.
    async with running_server(
        store="sqlite", data_dir=str(tmp_path / "d"), memory_limit=300
    ) as srv:
        await fill(srv, "r", 200)
        log: Any = srv.log
        read_disk = log._read_disk

        def slow_read_disk(*args: Any) -> Any:
            time.sleep(0.5)  # the reader thread, not the event loop
            return read_disk(*args)

        log._read_disk = slow_read_disk
        async with client(srv, "r") as c:
            await c.send({"type": "travel", "limit": 3})
            await asyncio.sleep(0.15)
            await publish_many(srv, "r", ["new"] * 5)  # seqs 201..205, during the read
            replayed, ack = await c.read_travel()
            assert ack["count"] == len(replayed) == 3
            new = [s for s in seqs(replayed) if s > 200]
            new += seqs(await c.recv_events(5 - len(new)))
            assert new == [201, 202, 203, 204, 205], (seqs(replayed), new)
            await c.expect_silence(0.2)


async def test_a_sliced_travel_over_many_channels_sends_each_event_once(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A travel over hundreds of channels looks up where each one ends across several
    loop turns. Events appended meanwhile must come either in the reply or live after
    the ack, never both: here two are appended at the travel's first pause, to a
    channel already looked up and to one not yet looked up."""
    channels = [f"m{n:04d}" for n in range(600)]
    settings: dict[str, Any] = {
        "store": store,
        "data_dir": str(tmp_path / "d"),
        "max_subscriptions": 1_000,
        "client_rate_limit": None,
    }
    async with running_server(**settings) as server, client(server, "m") as c:
        for channel in channels:
            await c.send({"type": "subscribe", "organization_id": channel})
        for _ in channels:
            assert (await c.recv())["status"] == "subscribed"
        await publish(server, [event(ch, "old") for ch in channels])
        await c.recv_events(len(channels))  # live

        pause = slicing.TimeSlice.pause
        appended: list[str] = []

        async def pause_after_appending(time_slice: slicing.TimeSlice) -> None:
            if not appended:
                appended.extend((channels[0], channels[-1]))
                await server.log.append([NewEvent(ch, b'"mid"') for ch in appended])
            await pause(time_slice)

        monkeypatch.setattr(slicing.TimeSlice, "pause", pause_after_appending)
        replayed, ack = await c.travel(limit=50_000)
        after = await c.recv_events(2, within=10)
        await c.expect_silence(0.2)
    assert appended, "the travel never paused"
    assert ack["count"] == len(replayed)
    received = [(e["organization_id"], e["data"]["seq"]) for e in replayed + after]
    expected = [(ch, 1) for ch in channels] + [(ch, 2) for ch in appended]
    assert sorted(received) == sorted(expected)  # each once
    assert [e["data"]["payload"] for e in after] == ["mid", "mid"]  # live, after the ack
