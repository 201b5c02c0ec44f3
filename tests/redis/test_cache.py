"""Travel while Redis is down: a process answers from its cache of recently delivered
events when the cache holds the whole answer, else ``unavailable``; when Redis is back,
live delivery goes on with no gap and no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from athena_cdc.log.base import Event
from athena_cdc.log.redis_cache import EVENT_OVERHEAD, STALE_ENTRY, RecentEvents
from tests.log.redis_server import RedisServer, redis_server
from tests.protocol._support import client
from tests.redis.test_shared_log import nodes, post


def events(channel: str, seqs: range, ts: int = 1000) -> list[Event]:
    return [Event.build(channel, seq, ts + seq, b"%d" % seq) for seq in seqs]


def test_the_cache_is_bounded_in_bytes_and_drops_the_oldest_events_first() -> None:
    size = len(events("a", range(1, 2))[0].frame) + EVENT_OVERHEAD
    cache = RecentEvents(10 * size)
    cache.add(events("a", range(1, 9)))
    cache.add(events("b", range(1, 5)))  # 12 events: a's two oldest go
    assert cache.bytes <= 10 * size
    assert cache.read("a", 1, 8, 2, None, 100, False, None) == events("a", range(3, 9))
    assert cache.read("a", 1, 8, 1, None, 100, False, None) is None  # seq 2 is gone
    assert cache.read("b", 1, 4, 0, None, 100, False, None) == events("b", range(1, 5))


def test_a_channel_whose_delivery_jumps_starts_over_within_the_bound() -> None:
    size = len(events("a", range(1, 2))[0].frame) + EVENT_OVERHEAD
    cache = RecentEvents(10 * size)
    for start in range(1, 1_000, 10):  # every add jumps past a gap
        cache.add(events("a", range(start, start + 5)))
        assert cache.bytes <= 10 * size
    assert cache.read("a", 1, 995, 990, None, 100, False, None) == events("a", range(991, 996))
    assert len(cache._order) <= 10 * size // STALE_ENTRY  # what forgotten entries hold


def test_the_cache_answers_only_what_it_holds_whole() -> None:
    cache = RecentEvents(1024**2)
    cache.add(events("a", range(11, 21)))  # seqs 11..20, ts 1011..1020
    # Newest 5: held. Newest 15: 6..10 are not.
    assert [e.seq for e in cache.read("a", 1, 20, None, None, 5, True, None) or []] == [
        16, 17, 18, 19, 20,
    ]  # fmt: skip
    assert cache.read("a", 1, 20, None, None, 15, True, None) is None
    # A ts cursor whose first match is held, with an older event held before it: whole.
    assert [e.seq for e in cache.read("a", 1, 20, None, 1015, 3, False, None) or []] == [
        15, 16, 17,
    ]  # fmt: skip
    assert cache.read("a", 1, 20, None, 1011, 3, False, None) is None  # 1..10 may match
    # Retention dropped 1..10: then the cache holds all there is.
    assert cache.read("a", 11, 20, 0, None, 2, False, None) == events("a", range(11, 13))
    # Up to the travel's upper bound only; nothing beyond what was delivered.
    assert cache.read("a", 1, 20, 12, None, 100, False, 14) == events("a", range(13, 15))
    assert cache.read("a", 1, 20, 20, None, 100, False, None) == []
    assert cache.read("b", 1, 3, 0, None, 10, False, None) is None  # never cached
    # A channel whose delivery jumped starts its cache over.
    cache.add(events("a", range(30, 32)))
    assert cache.read("a", 1, 31, 29, None, 10, False, None) == events("a", range(30, 32))
    assert cache.read("a", 1, 31, 19, None, 10, False, None) is None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", appendonly=True) as server:
        yield server


async def test_a_travel_while_redis_is_down_is_answered_from_the_cache_when_it_holds_it(
    redis: RedisServer, tmp_path: Path
) -> None:
    # About 20 small events fit in 4 KiB.
    with nodes(redis.url, 2, tmp_path, "--redis-cache-bytes", "4KiB") as (a, b):
        async with client(b.ws, "c") as on_b, aiohttp.ClientSession() as session:
            for i in range(50):
                assert (await post(session, a, "c", [i]))[0] == 201
            assert [e["data"]["seq"] for e in await on_b.recv_events(50)] == list(
                range(1, 51)
            )
            redis.stop()
            travelled, ack = await on_b.travel(organization_id="c", since_seq=40)
            assert [e["data"]["seq"] for e in travelled] == list(range(41, 51))
            assert ack["status"] == "travel_complete"
            travelled, _ = await on_b.travel(organization_id="c", limit=5)
            assert [e["data"]["seq"] for e in travelled] == list(range(46, 51))
            # Not held whole (1..30 were dropped from the cache), or never seen here.
            for request in (
                {"organization_id": "c", "since_seq": 0},
                {"organization_id": "never-seen", "since_seq": 0},
            ):
                await on_b.send({"type": "travel", **request})
                error = await on_b.recv(20)
                assert (error["status"], error["error"]) == ("error", "unavailable"), error
            redis.start()
            deadline = asyncio.get_running_loop().time() + 20
            while (await post(session, a, "c", ["back"]))[0] != 201:
                assert asyncio.get_running_loop().time() < deadline, "publishes did not resume"
                await asyncio.sleep(0.1)
            assert [e["data"]["seq"] for e in await on_b.recv_events(1, 20)] == [51]
            await on_b.expect_silence(0.3)
