"""Resuming across server restarts, against ``athena-cdc serve`` subprocesses.

A kill -9 of the sqlite server loses nothing acknowledged, so after every restart the
client must go on from its last seq: every seq once, in order. A memory server starts
a new log (a new epoch) each time: the client says so with a Reset and starts over.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena_cdc.client import Event, Item, Position, Reset, State, connect
from tests.client._support import (
    FAST,
    event_seqs,
    newest_seq,
    publish_retrying,
    take,
    take_until,
    upto,
)
from tests.protocol.test_close import wait_until
from tests.support.servers import ServerProcess


def restart(server: ServerProcess) -> None:
    server.kill()
    server.start()


async def test_a_client_resumes_after_kill_9_and_restarts_with_every_seq_once_in_order(
    tmp_path: Path,
) -> None:
    with ServerProcess(["--data-dir", str(tmp_path / "data")]) as server:
        publish_retrying(server.base, "orders", list(range(50)))
        async with connect(server.ws, client="shop", backoff=FAST) as c:
            await c.subscribe("orders", since_seq=0)
            await take_until(c, upto("orders", 50))
            # A producer keeps publishing while the server is killed and restarted three
            # times; some events are appended while the client is away.
            stop = threading.Event()

            def produce() -> None:
                n = 0
                while not stop.is_set():
                    publish_retrying(server.base, "orders", [n, n + 1, n + 2])
                    n += 3
                    time.sleep(0.005)

            producer = threading.Thread(target=produce)
            producer.start()
            items: list[Item] = []
            try:
                for _ in range(3):
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(restart, server)
                    publish_retrying(server.base, "orders", ["while the client is away"] * 20)
                    items += await take_until(c, lambda got: c.state is State.LIVE and len(got) > 0)
            finally:
                stop.set()
                await asyncio.to_thread(producer.join)
            newest = newest_seq(server.base, "orders")
            last = event_seqs(items)[-1] if items else 50
            if last < newest:
                items += await take_until(c, upto("orders", newest))
            assert event_seqs(items) == list(range(51, newest + 1))
            assert all(isinstance(i, Event) for i in items)
            assert c.connections == 4
            assert c.position("orders") == items[-1].position == Position(newest, items[-1].epoch)  # type: ignore[union-attr]


async def test_10_000_events_through_three_kill_9_restarts_and_4008_arrive_once_in_order(
    tmp_path: Path,
) -> None:
    """The issue's scenario: a producer publishes 10,000 events while the server is
    SIGKILLed and restarted three times and the client, not reading for a while, is
    closed with 4008 (a small --slow-consumer-limit)."""
    args = ["--data-dir", str(tmp_path / "data"), "--slow-consumer-limit", "64KiB"]
    with ServerProcess(args) as server:
        notes: list[str] = []
        async with connect(server.ws, client="shop", backoff=FAST, buffer=1,
                           on_state=lambda state, detail: notes.append(detail)) as c:
            await c.subscribe("orders", since_seq=0)
            await asyncio.wait_for(c.wait_live(), 10)
            produced = threading.Event()

            def produce() -> None:
                for _ in range(10_000 // 50):
                    publish_retrying(server.base, "orders", ["x" * 1_500] * 50)
                    time.sleep(0.005)
                produced.set()

            producer = threading.Thread(target=produce)
            producer.start()
            items: list[Item] = []
            try:
                # The application reads nothing until the server gives up on it.
                await wait_until(
                    "a 4008 close", lambda: any("4008" in n for n in notes) or produced.is_set(),
                    within=60,
                )

                async def consume() -> None:
                    async for item in c:
                        items.append(item)

                consumer = asyncio.create_task(consume())
                # Counted before each event that causes a reconnection (the 4008, then
                # each restart): the client may be back before the test looks again.
                expected = 2  # the first connection, then the one after the 4008
                for _ in range(3):
                    await wait_until("a new connection", lambda n=expected: (
                        c.connections >= n and c.state is not State.CONNECTING), within=30)
                    await asyncio.sleep(0.3)
                    expected = c.connections + 1
                    await asyncio.to_thread(restart, server)
            finally:
                await asyncio.to_thread(producer.join)
            newest = newest_seq(server.base, "orders")
            await wait_until("every event", lambda: event_seqs(items[-1:]) == [newest], 60)
            # the first connection, one after the 4008, one after each restart
            await wait_until("the last reconnection", lambda: c.connections >= 5, 30)
            consumer.cancel()
            assert event_seqs(items) == list(range(1, newest + 1))
            assert newest >= 10_000 and len(items) == newest
            assert any("4008" in n for n in notes), notes


async def test_a_new_epoch_after_a_memory_server_restart_yields_reset_then_the_new_log() -> None:
    with ServerProcess(["--store", "memory"]) as server:
        publish_retrying(server.base, "orders", [1, 2, 3, 4, 5])
        async with connect(server.ws, client="shop", backoff=FAST) as c:
            await c.subscribe("orders", since_seq=2)
            before = await take(c, 3)
            assert event_seqs(before) == [3, 4, 5]
            old_epoch = before[-1].epoch  # type: ignore[union-attr]
            await asyncio.to_thread(restart, server)
            publish_retrying(server.base, "orders", ["a", "b"])
            reset, *after = await take(c, 3)
            assert isinstance(reset, Reset)
            assert (reset.channel, reset.old_epoch, reset.last_seq) == ("orders", old_epoch, 5)
            assert reset.new_epoch != old_epoch
            assert [(e.seq, e.payload, e.epoch) for e in after] == [  # type: ignore[union-attr]
                (1, "a", reset.new_epoch),
                (2, "b", reset.new_epoch),
            ]
            assert c.position("orders") == after[-1].position  # type: ignore[union-attr]


async def test_a_wiped_sqlite_data_dir_yields_reset_then_the_new_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(["--data-dir", str(data)]) as server:
        publish_retrying(server.base, "orders", [1, 2, 3])
        async with connect(server.ws, client="shop", backoff=FAST) as c:
            await c.subscribe("orders", since_seq=0)
            before = await take(c, 3)
            old_epoch = before[-1].epoch  # type: ignore[union-attr]
            server.kill()
            shutil.rmtree(data)  # the operator starts over with an empty log
            await asyncio.to_thread(server.start)
            publish_retrying(server.base, "orders", ["a"])
            reset, after = await take(c, 2)
            assert isinstance(reset, Reset)
            assert (reset.old_epoch, reset.last_seq) == (old_epoch, 3)
            assert reset.new_epoch != old_epoch
            assert isinstance(after, Event) and (after.seq, after.payload) == (1, "a")


async def test_a_saved_position_from_another_epoch_starts_the_channel_over() -> None:
    with ServerProcess(["--store", "memory"]) as server:
        publish_retrying(server.base, "orders", ["x", "y"])
        async with connect(server.ws, client="shop", backoff=FAST) as c:
            await c.subscribe("orders", since_seq=40, epoch="AAAAAAAAAAA")
            reset, *events = await take(c, 3)
            assert isinstance(reset, Reset) and reset.old_epoch == "AAAAAAAAAAA"
            assert event_seqs(events) == [1, 2]


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kills=st.lists(st.floats(min_value=0.05, max_value=0.6), min_size=1, max_size=3),
    seed=st.integers(0, 2**32),
)
def test_no_seq_is_ever_repeated_or_out_of_order_across_random_restarts(
    tmp_path_factory: pytest.TempPathFactory, kills: list[float], seed: int
) -> None:
    """Restarts at random moments, with random bursts on two channels: whatever the
    timing, each channel's seqs come once and in order, and none is missing."""
    rng = random.Random(seed)
    data = tmp_path_factory.mktemp("random-restarts")

    async def scenario() -> None:
        with ServerProcess(["--data-dir", str(data)]) as server:
            async with connect(server.ws, client="a", backoff=FAST, buffer=50) as c:
                await c.subscribe("a", since_seq=0)
                await c.subscribe("b", since_seq=0)
                items: list[Item] = []
                for pause in kills:
                    for channel in ("a", "b"):
                        count = rng.randrange(1, 300)
                        await asyncio.to_thread(
                            publish_retrying, server.base, channel, list(range(count))
                        )
                    await asyncio.sleep(pause)
                    await asyncio.to_thread(restart, server)
                    items += await take_until(c, lambda got: len(got) > 0)
                newest = {ch: newest_seq(server.base, ch) for ch in ("a", "b")}

                def complete(got: list[Item]) -> bool:
                    seen = items + got
                    return all(n == 0 or n in event_seqs(seen, ch) for ch, n in newest.items())

                items += await take_until(c, complete)
                for channel, n in newest.items():
                    assert event_seqs(items, channel) == list(range(1, n + 1))

    asyncio.run(scenario())
