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
