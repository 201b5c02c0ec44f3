"""The log link of ``--workers`` in one process: a :class:`LogServer` over a real store
and :class:`RemoteLog` clients on a real Unix socket (what each worker runs)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from athena_cdc.log.base import Event, EventLog, NewEvent, StorageUnavailable, TravelQuery
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.remote import LogServer, OwnerLink, RemoteLog
from athena_cdc.log.sqlite import SqliteLog


@dataclass
class Heard:
    events: list[Event] = field(default_factory=list)

    def __call__(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


@pytest.fixture(params=["memory", "sqlite"])
async def owner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    log: EventLog = (
        MemoryLog(retention_events=50, memory_limit=64 * 1024)
        if request.param == "memory"
        else SqliteLog(tmp_path / "data", retention_events=50)
    )
    await log.open()
    yield log
    await log.close()


@pytest.fixture
async def server(owner: EventLog, tmp_path: Path) -> AsyncIterator[LogServer]:
    server = LogServer(str(tmp_path / "log.sock"), owner)
    await server.start()
    yield server
    await server.stop()


async def remote(server: LogServer) -> RemoteLog:
    link = OwnerLink(server.path)
    await link.connect()
    log = RemoteLog(link, retention_events=50)
    await log.open()
    return log


def batch(channel: str, *payloads: str) -> list[NewEvent]:
    return [NewEvent(channel, p.encode()) for p in payloads]


async def test_an_append_through_one_worker_is_heard_by_every_worker_and_the_owner(
    owner: EventLog, server: LogServer
) -> None:
    a, b = await remote(server), await remote(server)
    heard_a, heard_b, heard_owner = Heard(), Heard(), Heard()
    a.add_listener(heard_a)
    b.add_listener(heard_b)
    owner.add_listener(heard_owner)
    events = await a.append(batch("c", "1", "2") + batch("d", '"x"'))
    assert [(e.channel, e.seq) for e in events] == [("c", 1), ("c", 2), ("d", 1)]
    # The worker that appended has delivered them before its append returned.
    assert heard_a.events == events
    assert [e.frame for e in events] == [e.frame for e in heard_owner.events]
    await b.append(batch("c", "3"))
    assert [(e.channel, e.seq) for e in heard_a.events] == [("c", 1), ("c", 2), ("d", 1), ("c", 3)]
    assert heard_b.events == heard_a.events
    assert a.epoch == b.epoch == owner.epoch
    await a.close()
    await b.close()


async def test_refreshed_bounds_are_what_the_worker_has_delivered_and_follow_it(
    server: LogServer,
) -> None:
    a, b = await remote(server), await remote(server)
    assert a.bounds("c").last_seq == 0  # never asked: an empty view
    await b.append(batch("c", *map(str, range(60))))
    await a.refresh_bounds(["c"])
    assert server.log is not None
    assert a.bounds("c") == server.log.bounds("c")
    assert a.bounds("c").last_seq == 60
    await b.append(batch("c", "61"))
    await a.refresh_bounds(["other"])  # its answer comes after the events sent before it
    assert a.bounds("c").last_seq == 61
    await a.close()
    await b.close()


async def test_a_travel_through_a_worker_reads_the_owners_log(server: LogServer) -> None:
    a = await remote(server)
    await a.append(batch("t", *map(str, range(20))))
    result = await a.travel(TravelQuery(("t",), since_seq=5, since_ts_ms=None, limit=10))
    assert [e.seq for e in result.events] == list(range(6, 16))
    assert result.has_more and result.gaps == []
    tail = await a.travel(TravelQuery(("t",), since_seq=None, since_ts_ms=None, limit=3))
    assert [e.message for e in tail.events] == [
        e.message for e in await a.read_channel("t", 17, None, 10, False)
    ]
    await a.close()


async def test_a_refused_append_is_storage_unavailable_in_the_worker(server: LogServer) -> None:
    """The owner's refusal (here the memory store's bound on remembered channels, or an
    empty name list) reaches the worker as StorageUnavailable: a 503, never a 500."""
    a = await remote(server)
    if isinstance(server.log, MemoryLog):
        with pytest.raises(StorageUnavailable, match="memory-limit"):
            for n in range(10_000):
                await a.append(batch(f"channel-{n:05d}-" + "x" * 200, "1"))
    assert await a.get_position("nobody") is None
    assert await a.prune() == 0
    await a.close()


async def test_a_lost_link_fails_requests_and_tells_the_worker(server: LogServer) -> None:
    a = await remote(server)
    lost = asyncio.Event()
    a.link.on_lost = lost.set
    await server.stop()
    await asyncio.wait_for(lost.wait(), 5)
    problem = a.health()
    assert problem is not None and "lost" in problem
    with pytest.raises(StorageUnavailable):
        await a.append(batch("c", "1"))


async def test_the_socket_is_private(server: LogServer) -> None:
    assert os.stat(server.path).st_mode & 0o777 == 0o600
