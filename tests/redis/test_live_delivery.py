"""Live delivery of the Redis store across processes (two logs on one Redis stand for
two processes): every append heard once, in seq order, even across a pub/sub outage."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from athena_cdc.log.base import Event, NewEvent
from athena_cdc.log.redis import RedisLog
from tests.conftest import flush_redis


async def until(condition: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_pubsub_outage_is_filled_from_the_stream_without_duplicates(
    redis_url: str,
) -> None:
    url = redis_url + "/14"
    flush_redis(url)
    writer, reader = RedisLog(url), RedisLog(url)
    await writer.open()
    await reader.open()
    heard: dict[str, list[int]] = {"w": [], "r": []}

    def listener(name: str) -> object:
        def on_events(events: list[Event]) -> None:
            heard[name].extend(e.seq for e in events if e.channel == "g")

        return on_events

    writer.add_listener(listener("w"))  # type: ignore[arg-type]
    reader.add_listener(listener("r"))  # type: ignore[arg-type]
    admin = aioredis.Redis.from_url(url)
    try:
        for i in range(50):
            await writer.append([NewEvent("g", b"%d" % i)])
        await until(lambda: len(heard["r"]) == 50)
        # Cut every pub/sub connection and append while they reconnect: the messages
        # published meanwhile are lost to pub/sub and must come from the stream.
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await asyncio.gather(*(writer.append([NewEvent("g", b"%d" % i)]) for i in range(50)))
        await until(lambda: len(heard["r"]) >= 100)
        await asyncio.sleep(0.3)  # anything late would be a duplicate
        assert heard["r"] == list(range(1, 101))
        assert heard["w"] == list(range(1, 101))
        assert reader.bounds("g").last_seq == 100
    finally:
        await admin.aclose()
        await writer.close()
        await reader.close()


async def test_an_own_append_never_skips_an_earlier_seq_still_in_pubsub(
    redis_url: str,
) -> None:
    """Two processes append to a channel neither has delivered yet: B takes seq 1, A
    seq 2, and A hears its own reply before B's pub/sub message. A must not start the
    channel at its own seq 2 and drop seq 1 when it arrives."""
    url = redis_url + "/13"
    flush_redis(url)
    a, b = RedisLog(url), RedisLog(url)
    await a.open()
    await b.open()
    heard: list[int] = []
    a.add_listener(lambda events: heard.extend(e.seq for e in events))
    try:
        async with a._delivering:  # A's pub/sub reader cannot deliver B's seq 1 yet
            assert [e.seq for e in await b.append([NewEvent("fresh", b"1")])] == [1]
            assert [e.seq for e in await a.append([NewEvent("fresh", b"2")])] == [2]
            await asyncio.sleep(0.1)
        await until(lambda: len(heard) >= 2)
        await asyncio.sleep(0.2)  # anything late would be a duplicate
        assert heard == [1, 2]
    finally:
        await a.close()
        await b.close()
