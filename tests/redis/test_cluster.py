"""The Redis store on a Redis Cluster (``--store redis+cluster://...``): three real
primaries, two athena-cdc nodes; sharded pub/sub carries events across nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from athena_cdc.log.base import StorageUnavailable
from athena_cdc.log.redis_cluster import slot_of, slot_tags
from tests.log.redis_server import ClusterServers
from tests.protocol._support import client
from tests.redis.test_shared_log import nodes, post, received_seqs
from tests.support.servers import ServerProcess


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterServers]:
    servers = ClusterServers(tmp_path / "cluster")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def test_every_slot_has_a_marker_tag_that_hashes_to_it() -> None:
    from redis.crc import key_slot

    tags = slot_tags()
    assert len(tags) == 16384
    assert all(key_slot(tag.encode()) == slot for slot, tag in enumerate(tags))


async def test_publish_on_one_node_reaches_a_subscriber_on_another_with_dense_seqs(
    cluster: ClusterServers, tmp_path: Path
) -> None:
    # Channels on different primaries, in one POST each.
    channels = ["alpha", "beta", "gamma", "delta"]
    assert len({slot_of(c) * 3 // 16384 for c in channels}) > 1
    with nodes(cluster.url, 2, tmp_path) as (a, b):
        async with client(b.ws, "alpha") as on_b, client(a.ws, "alpha") as on_a:
            async with aiohttp.ClientSession() as session:
                sent: list[int] = []
                for i in range(20):
                    status, seqs = await post(session, a, "alpha", list(range(i % 3 + 1)))
                    assert status == 201
                    sent += seqs
                assert sent == list(range(1, len(sent) + 1))
                # One POST over channels of several primaries: each gets its seq.
                body = [{"organization_id": c, "payload": c} for c in channels[1:]]
                async with session.post(
                    a.base + "/events",
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as response:
                    assert response.status == 201
                    answer = await response.json()
                    assert [e["seq"] for e in answer["events"]] == [1, 1, 1]
                assert await received_seqs(on_b, len(sent)) == sent
                await on_b.expect_silence(0.3)
                await on_a.recv_events(len(sent))

                # 2 x 5 producers on two nodes, one channel: dense seqs, each once.
                async def producer(node: ServerProcess, number: int) -> list[int]:
                    got: list[int] = []
                    for i in range(20):
                        status, seqs = await post(session, node, "alpha", [[number, i]])
                        assert status == 201
                        got += seqs
                    return got

                results = await asyncio.gather(
                    *(producer(node, n) for node in (a, b) for n in range(5))
                )
            total = len(sent) + 200
            assert sorted(s for r in results for s in r) == list(range(len(sent) + 1, total + 1))
            assert await received_seqs(on_b, 200) == list(range(len(sent) + 1, total + 1))
            assert await received_seqs(on_a, 200) == list(range(len(sent) + 1, total + 1))
            events, _ = await on_b.travel(organization_id="alpha", since_seq=0, limit=1000)
            assert [e["data"]["seq"] for e in events] == list(range(1, total + 1))


async def test_a_shard_that_lost_its_data_moves_the_log_to_a_new_epoch(
    cluster: ClusterServers,
) -> None:
    """The slot markers tell a shard that lost its data from a new channel: the log
    takes a new epoch; channels on the other shards keep their seqs, the lost ones start
    again at 1 -- no seq is reused under one epoch."""
    import redis.asyncio as aioredis

    from athena_cdc.log.base import NewEvent
    from athena_cdc.log.redis_cluster import RedisClusterLog

    lost, kept = "alpha", "beta"
    per_node = 16384 // 3
    owner = min(slot_of(lost) // per_node, 2)
    assert min(slot_of(kept) // per_node, 2) != owner
    log = RedisClusterLog(cluster.url)
    await log.open()
    changed: list[str] = []
    log.on_epoch_change = changed.append
    admin: Any = aioredis.Redis(port=cluster.nodes[owner].port)
    try:
        # Nobody here listens (no tail checks): the next append to the shard notices.
        log.interest = lambda channel: False
        await log.append([NewEvent(lost, b"1"), NewEvent(lost, b"2"), NewEvent(kept, b"1")])
        old = log.epoch
        await admin.flushall()  # that shard's data is gone
        with pytest.raises(StorageUnavailable, match="new epoch"):
            await log.append([NewEvent(lost, b"3")])
        assert log.epoch != old and changed == [log.epoch]
        assert [e.seq for e in await log.append([NewEvent(lost, b"again")])] == [1]
        assert [e.seq for e in await log.append([NewEvent(kept, b"2")])] == [2]
        # With subscribers here, the tail check notices without any append.
        log.interest = lambda channel: True
        await log.refresh_bounds([lost, kept])  # both followed again
        await admin.flushall()
        deadline = asyncio.get_running_loop().time() + 15
        while len(changed) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the loss went unnoticed"
            await asyncio.sleep(0.1)
        assert [e.seq for e in await log.append([NewEvent(kept, b"3")])] == [3]
    finally:
        await admin.aclose()
        await log.close()


async def test_the_fence_holds_per_slot_and_the_log_is_counted_on_every_primary(
    cluster: ClusterServers,
) -> None:
    from athena_cdc.log.base import NewEvent, SourcePosition, StalePosition, TravelQuery
    from athena_cdc.log.redis_cluster import RedisClusterLog

    channels = ["alpha", "beta", "gamma", "delta"]
    log = RedisClusterLog(cluster.url)
    await log.open()
    try:
        batch = [NewEvent(c, b"1") for c in channels]
        await log.append(batch, SourcePosition("pg", "0/20"))
        assert await log.get_position("pg") == "0/20"
        with pytest.raises(StalePosition, match="not beyond"):
            await log.append(batch, SourcePosition("pg", "0/20"))
        await log.append([NewEvent("alpha", b"2")], SourcePosition("pg", "0/21"))
        result = await log.travel(TravelQuery(tuple(channels), 0, None, 100))
        assert sorted((e.channel, e.seq) for e in result.events) == sorted(
            [(c, 1) for c in channels] + [("alpha", 2)]
        )
        await log._update_stats()
        assert log.stats().channels == 4 and log.stats().events == 5
    finally:
        await log.close()


async def test_a_durable_mode_on_a_cluster_is_refused_with_the_reason(
    cluster: ClusterServers,
) -> None:
    from athena_cdc.log.redis import RedisConfigError
    from athena_cdc.log.redis_cluster import RedisClusterLog

    with pytest.raises(RedisConfigError, match="not available on a Redis Cluster"):
        await RedisClusterLog(cluster.url, durability="replicas:1").open()
