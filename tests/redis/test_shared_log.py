"""Several athena-cdc processes sharing one Redis (``--store redis://...``): real
processes, a real redis-server, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.log.redis_server import RedisServer, redis_server
from tests.protocol._support import Client, client
from tests.support.servers import ServerProcess

Json = object


@contextlib.contextmanager
def nodes(store: str, count: int, tmp_path: Path, *extra: str) -> Iterator[list[ServerProcess]]:
    """``count`` athena-cdc processes on the same Redis (started one after another)."""
    procs = [
        ServerProcess(["--store", store, *extra], log_path=tmp_path / f"node{i}.log")
        for i in range(count)
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(10)


async def post(
    session: aiohttp.ClientSession, node: ServerProcess, channel: str, payloads: list[Json]
) -> tuple[int, list[int]]:
    """POST /events; the status and, on 201, the seqs given."""
    body = [{"organization_id": channel, "payload": p} for p in payloads]
    async with session.post(
        node.base + "/events", data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as response:
        answer = await response.json()
        if response.status != 201:
            return response.status, []
        return 201, [e["seq"] for e in answer["events"]]


async def received_seqs(c: Client, count: int, within: float = 10.0) -> list[int]:
    return [e["data"]["seq"] for e in await c.recv_events(count, within)]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", appendonly=True) as server:
        yield server


async def test_publish_on_one_node_reaches_subscribers_on_the_others_once_in_order(
    redis: RedisServer, tmp_path: Path
) -> None:
    with nodes(redis.url, 3, tmp_path) as (a, b, c):
        async with client(b.ws, "orders") as on_b, client(c.ws, "orders") as on_c:
            async with aiohttp.ClientSession() as session:
                sent: list[int] = []
                for i in range(30):  # single events and batches
                    status, seqs = await post(session, a, "orders", list(range(i % 3 + 1)))
                    assert status == 201
                    sent += seqs
            assert sent == list(range(1, len(sent) + 1))
            assert await received_seqs(on_b, len(sent)) == sent
            assert await received_seqs(on_c, len(sent)) == sent
            await on_b.expect_silence(0.3)
            await on_c.expect_silence(0.1)
            # Travel on C answers from the shared log, under the same epoch as B.
            events, ack = await on_c.travel(organization_id="orders", since_seq=0, limit=1000)
            assert [e["data"]["seq"] for e in events] == sent
            _, ack_b = await on_b.travel(organization_id="orders", since_seq=0, limit=1)
            assert ack["epoch"] == ack_b["epoch"]


async def test_producers_on_two_nodes_get_dense_seqs_without_duplicates(
    redis: RedisServer, tmp_path: Path
) -> None:
    with nodes(redis.url, 2, tmp_path) as (a, b):
        async with client(a.ws, "shared") as on_a, client(b.ws, "shared") as on_b:
            async with aiohttp.ClientSession() as session:

                async def producer(node: ServerProcess, number: int) -> list[int]:
                    seqs: list[int] = []
                    for i in range(20):
                        status, got = await post(session, node, "shared", [[number, i]])
                        assert status == 201
                        seqs += got
                    return seqs

                results = await asyncio.gather(
                    *(producer(node, n) for node in (a, b) for n in range(5))
                )
            total = sum(len(r) for r in results)
            assert total == 200
            assert sorted(s for r in results for s in r) == list(range(1, 201))
            # Each subscriber gets all of them, once, in seq order, whichever node took them.
            assert await received_seqs(on_a, 200) == list(range(1, 201))
            assert await received_seqs(on_b, 200) == list(range(1, 201))
            await on_a.expect_silence(0.2)


async def test_a_node_killed_mid_stream_loses_nothing_it_acknowledged(
    redis: RedisServer, tmp_path: Path
) -> None:
    with nodes(redis.url, 2, tmp_path, "--redis-durability", "none") as (a, b):
        acknowledged: list[int] = []
        async with aiohttp.ClientSession() as session:

            async def produce() -> None:
                with contextlib.suppress(aiohttp.ClientError):
                    for i in range(10_000):
                        status, seqs = await post(session, a, "k", [i, i])
                        assert status == 201
                        acknowledged.extend(seqs)

            task = asyncio.create_task(produce())
            while len(acknowledged) < 200:  # noqa: ASYNC110 (polling a counter)
                await asyncio.sleep(0.01)
            a.kill()
            await task
        async with client(b.ws, "k") as on_b:
            events, _ = await on_b.travel(organization_id="k", since_seq=0, limit=50_000)
        stored = [e["data"]["seq"] for e in events]
        assert stored == list(range(1, len(stored) + 1))
        assert set(acknowledged) <= set(stored)


async def test_redis_restarted_under_load_clients_see_no_gap_or_duplicate(
    redis: RedisServer, tmp_path: Path
) -> None:
    with nodes(redis.url, 2, tmp_path) as (a, b):
        async with client(b.ws, "r") as on_b, aiohttp.ClientSession() as session:
            acknowledged: list[int] = []
            refused = 0
            stop = asyncio.Event()

            async def produce() -> None:
                nonlocal refused
                i = 0
                while not stop.is_set():
                    i += 1
                    status, seqs = await post(session, a, "r", [i])
                    if status == 201:
                        acknowledged.extend(seqs)
                    else:
                        assert status == 503
                        refused += 1
                        await asyncio.sleep(0.02)

            task = asyncio.create_task(produce())
            while len(acknowledged) < 100:  # noqa: ASYNC110 (polling a counter)
                await asyncio.sleep(0.01)
            redis.stop()
            await asyncio.sleep(0.5)
            async with session.get(b.base + "/ready") as response:
                assert response.status == 503
                assert "redis" in (await response.text()).lower()
            redis.start()
            before = len(acknowledged)
            deadline = asyncio.get_running_loop().time() + 20
            while len(acknowledged) < before + 100:
                assert asyncio.get_running_loop().time() < deadline, "publishes did not resume"
                await asyncio.sleep(0.02)
            stop.set()
            await task
            assert refused > 0
            last = max(acknowledged)
            got: list[int] = []
            while not got or got[-1] < last:
                got += await received_seqs(on_b, 1, within=15)
            assert got == list(range(1, last + 1))  # the WebSocket stayed open throughout
            async with session.get(b.base + "/ready") as response:
                assert response.status == 200


async def test_a_redis_that_lost_its_data_gives_a_new_epoch(
    redis: RedisServer, tmp_path: Path
) -> None:
    with nodes(redis.url, 1, tmp_path) as (a,):
        async with aiohttp.ClientSession() as session:
            assert (await post(session, a, "e", [1, 2, 3]))[1] == [1, 2, 3]
            async with client(a.ws, "e") as before:
                _, ack = await before.travel(organization_id="e", since_seq=0, limit=10)
                old_epoch = ack["epoch"]
                redis.wipe()
                # The node notices (pub/sub reconnects to an empty Redis) and closes its
                # clients so they start over.
                with pytest.raises(Exception):  # noqa: B017 - the close, in whichever form
                    await before.recv(within=15)
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                status, seqs = await post(session, a, "e", ["again"])
                if status == 201:
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            assert seqs == [1]
            async with client(a.ws, "e") as after:
                _, ack = await after.travel(organization_id="e", since_seq=0, limit=10)
                assert ack["epoch"] != old_epoch


async def test_waitaof_on_a_redis_without_it_stops_at_start_with_one_line(
    tmp_path: Path,
) -> None:
    # Without AOF (or before Redis 7.2, like this machine's 7.0) WAITAOF cannot work.
    with redis_server(tmp_path / "no-aof", appendonly=False) as redis:
        await _expect_waitaof_refused(redis)


async def _expect_waitaof_refused(redis: RedisServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m", "athena_cdc", "serve", "--port", "0",
        "--store", redis.url, "--redis-durability", "waitaof",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    text = out.decode()
    assert "waitaof" in text and "Traceback" not in text, text


async def test_replicas_durability_waits_for_a_replica_and_refuses_without_one(
    redis: RedisServer, tmp_path: Path
) -> None:
    replica = RedisServer(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(redis.port)))
    replica.start()
    try:
        with nodes(redis.url, 1, tmp_path, "--redis-durability", "replicas:1") as (a,):
            async with aiohttp.ClientSession() as session:
                deadline = asyncio.get_running_loop().time() + 15
                while (status := (await post(session, a, "d", [1]))[0]) != 201:
                    assert asyncio.get_running_loop().time() < deadline, status
                    await asyncio.sleep(0.2)  # the replica is still syncing
                replica.stop()
                body = [{"organization_id": "d", "payload": 2}]
                async with session.post(
                    a.base + "/events",
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as response:
                    assert response.status == 503
                    assert "replicas acknowledged" in (await response.text())
    finally:
        replica.stop()


async def test_travels_on_a_third_node_meet_live_events_exactly_under_load(
    redis: RedisServer, tmp_path: Path
) -> None:
    """A client on C travels from its last seq again and again while A and B publish.
    Each reply is what was in flight live, then the travel from ``since_seq``; after the
    ack, live events go on right after the travel's last one: no gap, no duplicate."""
    with nodes(redis.url, 3, tmp_path) as (a, b, c):
        async with client(c.ws, "t") as on_c, aiohttp.ClientSession() as session:
            done = asyncio.Event()

            async def produce(node: ServerProcess) -> int:
                count = 0
                while not done.is_set():
                    status, seqs = await post(session, node, "t", [count, count])
                    assert status == 201
                    count += len(seqs)
                return count

            producers = [asyncio.create_task(produce(node)) for node in (a, b)]
            last = 0

            async def next_live() -> int:
                seq = (await on_c.recv(10))["data"]["seq"]
                assert seq == last + 1, (seq, last)
                return int(seq)

            travels_with_events = 0  # replies that had events in them
            for _ in range(15):
                for _ in range(5):
                    last = await next_live()
                since = last
                await on_c.send({"type": "travel", "organization_id": "t", "since_seq": since})
                window: list[int] = []
                while True:
                    message = await on_c.recv(10)
                    if message.get("status") == "travel_complete":
                        break
                    window.append(message["data"]["seq"])
                # Live events in flight (continuing from `since`), then the travel.
                split = next(
                    (i for i in range(1, len(window)) if window[i] <= window[i - 1]),
                    len(window),
                )
                in_flight, travel = window[:split], window[split:]
                assert in_flight == list(range(since + 1, since + 1 + len(in_flight)))
                if travel:
                    assert travel == list(range(since + 1, travel[-1] + 1))
                travels_with_events += bool(window)
                last = max([since, *window])
            done.set()
            total = sum(await asyncio.gather(*producers))
            while last < total:
                last = await next_live()
            assert travels_with_events > 0
