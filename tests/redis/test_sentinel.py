"""The Redis store behind Sentinel (``--store redis+sentinel://...``): a failover under a
steady producer loses nothing acknowledged, and subscribers on another node see every
event once, in order, exactly as stored -- real redis-servers, a real Sentinel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.log.redis_server import RedisServer, SentinelServer
from tests.protocol._support import client
from tests.redis.test_shared_log import nodes, post


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    primary = RedisServer(tmp_path / "primary", appendonly=True)
    primary.start()
    replica = RedisServer(
        tmp_path / "replica", appendonly=True, extra=("--replicaof", "127.0.0.1", str(primary.port))
    )
    replica.start()
    watcher = SentinelServer(tmp_path / "sentinel", primary.port)
    watcher.start()
    try:
        yield primary, replica, watcher
    finally:
        watcher.stop()
        replica.stop()
        primary.stop()


async def until(condition: object, within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_a_sentinel_failover_under_load_loses_nothing_acknowledged(
    sentinel: tuple[RedisServer, RedisServer, SentinelServer], tmp_path: Path
) -> None:
    _, replica, watcher = sentinel
    admin: Any = aioredis.Redis(port=watcher.port)

    async def sentinel_knows_the_replica() -> bool:
        replicas = await admin.execute_command("SENTINEL", "REPLICAS", watcher.service)
        return any(
            b"s_down" not in dict(zip(r[::2], r[1::2], strict=True))[b"flags"]
            and dict(zip(r[::2], r[1::2], strict=True))[b"master-link-status"] == b"ok"
            for r in replicas
        )

    async def primary_is_the_replica() -> bool:
        address = await admin.execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", watcher.service
        )
        return int(address[1]) == replica.port

    try:
        await until(sentinel_knows_the_replica, 30, "Sentinel to see the synced replica")
        with nodes(watcher.url, 2, tmp_path, "--redis-durability", "replicas:1") as (a, b):
            async with client(b.ws, "f") as on_b, aiohttp.ClientSession() as session:
                acknowledged: dict[int, int] = {}  # seq -> payload
                refused = 0
                stop = asyncio.Event()

                async def produce() -> None:
                    nonlocal refused
                    i = 0
                    while not stop.is_set():
                        i += 1
                        status, seqs = await post(session, a, "f", [i])
                        if status == 201:
                            acknowledged[seqs[0]] = i
                        else:
                            assert status == 503, status
                            refused += 1
                            await asyncio.sleep(0.05)

                _, ack = await on_b.travel(organization_id="f", since_seq=0, limit=1)
                epoch = ack["epoch"]
                task = asyncio.create_task(produce())
                await until(lambda: _true(len(acknowledged) >= 100), 20, "first publishes")
                assert await admin.execute_command("SENTINEL", "FAILOVER", watcher.service)
                await until(primary_is_the_replica, 60, "the failover")
                after = len(acknowledged)
                await until(lambda: _true(len(acknowledged) >= after + 100), 90, "publishes")
                stop.set()
                await task
                # Every event B delivered live, once, in order, as the log has it.
                last = max(acknowledged)
                live: list[tuple[int, int]] = []
                while not live or live[-1][0] < last:
                    message = await on_b.recv(20)
                    live.append((message["data"]["seq"], message["data"]["payload"]))
                await on_b.expect_silence(0.3)
                events, ack = await on_b.travel(organization_id="f", since_seq=0, limit=100_000)
                stored = [(e["data"]["seq"], e["data"]["payload"]) for e in events]
                assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
                assert live == stored[: len(live)]
                assert set(acknowledged.items()) <= set(stored)
                assert ack["epoch"] == epoch  # same log: the replica had everything
                # The new primary has no replica until Sentinel turns the old primary
                # into one: replicas:1 publishes answered 503 meanwhile.
                assert refused > 0
    finally:
        await admin.aclose()


async def _true(value: bool) -> bool:
    return value
