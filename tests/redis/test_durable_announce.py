"""With a durable ``--redis-durability``, other processes hear of an append only once it
is durable: an append whose wait fell short (its publisher got a 503) is not delivered
anywhere until a later durable append announces it with its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from athena_cdc.log.base import Event, NewEvent, StorageUnavailable
from athena_cdc.log.redis import RedisLog
from tests.log.redis_server import RedisServer


async def until(condition: object, within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_an_append_that_is_not_durable_is_not_delivered_until_a_durable_one(
    tmp_path: Path,
) -> None:
    primary = RedisServer(tmp_path / "primary", appendonly=True)
    primary.start()
    replica = RedisServer(
        tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port))
    )
    replica.start()
    writer = RedisLog(primary.url, durability="replicas:1")
    reader = RedisLog(primary.url)
    heard: list[tuple[int, bytes]] = []

    def on_events(events: list[Event]) -> None:
        heard.extend((e.seq, e.message) for e in events)

    reader.add_listener(on_events)  # type: ignore[arg-type]
    try:
        await writer.open()
        await reader.open()
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # the replica may still be syncing
            try:
                await writer.append([NewEvent("d", b'"first"')])
                break
            except StorageUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "replica never synced"
        await until(lambda: len(heard) == 1, 10, "the first event")
        # (Appends refused while the replica synced took seqs before it: the reader,
        # which never followed the channel before, starts at the first it heard.)
        first = heard[0][0]
        replica.stop()
        with pytest.raises(StorageUnavailable, match="replicas acknowledged"):
            await writer.append([NewEvent("d", b'"unsure"')])
        await asyncio.sleep(2.5)  # past a tail check: still not delivered
        assert [seq for seq, _ in heard] == [first]
        replica.start()
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await writer.append([NewEvent("d", b'"after"')])
                break
            except StorageUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "replica never resynced"
        # The refused one was stored after all: announced with the next durable one.
        await until(lambda: len(heard) >= 3, 10, "the announced events")
        assert [seq for seq, _ in heard] == list(range(first, first + len(heard)))
        assert b'"unsure"' in heard[1][1]
    finally:
        await writer.close()
        await reader.close()
        replica.stop()
        primary.stop()
