"""One reader per slot, in process: a second source on the same slot is a standby that
takes over, and a slot streamed by a connection without the leader lock is waited for.

Both sources share one log here, as processes share a Redis log (tests/sources/postgres/
test_pg_leader_nodes.py runs the same with real processes, test_pg_leader_fence.py the
stale-leader cases)."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg2
import psycopg2.extras
import pytest

from athena_cdc.log.memory import MemoryLog
from athena_cdc.sources.postgres.leader import lock_key

from .conftest import Db, eventually, read

SOURCE_LOGGER = "athena_cdc.sources.postgres.source"


def routable_table(db: Db) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")


def insert(db: Db, ids: range) -> None:
    for i in ids:  # one transaction each
        db.sql("INSERT INTO items VALUES (%s, 'acme')", i)


async def ids_in(log: MemoryLog) -> list[int]:
    return [payload["new"]["id"] for _, payload in await read(log, "acme")]


def test_the_lock_key_is_a_stable_signed_64_bit_number_per_slot() -> None:
    assert lock_key("athena_cdc") == lock_key("athena_cdc")
    assert lock_key("athena_cdc") != lock_key("athena_cdc2")
    assert all(-(2**63) <= lock_key(name) < 2**63 for name in ("a", "b", "é", "x" * 63))


async def test_a_second_source_on_the_slot_waits_quietly_and_takes_over_when_the_leader_stops(
    db: Db, memlog: MemoryLog, caplog: pytest.LogCaptureFixture
) -> None:
    routable_table(db)
    first = db.source(memlog, takeover_interval=0.2)
    await first.start()
    with caplog.at_level(logging.INFO, logger=SOURCE_LOGGER):
        second = db.source(memlog, takeover_interval=0.2)
        await second.start()
        assert (first.leader, first.role(), first.health()) == (True, "leader", None)
        assert (second.leader, second.role(), second.health()) == (False, "standby", None)
        insert(db, range(5))
        await eventually(lambda: memlog.bounds("acme").last_seq == 5, what="leader streams")
        await asyncio.sleep(1.0)
        # Several takeover attempts later, still a standby, and said so once, at INFO.
        standby_lines = [r for r in caplog.records if "standby" in r.getMessage()]
        assert [r.levelno for r in standby_lines] == [logging.INFO]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not second.leader and second.reconnects == 0

    await first.stop()
    stopped = time.monotonic()
    await eventually(lambda: second.leader, wait=10, what="takeover")
    assert time.monotonic() - stopped < 5
    assert (second.role(), second.health()) == ("leader", None)
    insert(db, range(5, 10))
    await eventually(lambda: memlog.bounds("acme").last_seq == 10, what="new leader streams")
    assert await ids_in(memlog) == list(range(10))  # each row once, in commit order


async def test_sources_started_at_once_on_a_new_database_elect_one_leader(
    db: Db, memlog: MemoryLog
) -> None:
    routable_table(db)
    sources = [db.source(memlog, takeover_interval=0.2) for _ in range(3)]
    # Racing to create the publication and the slot, then for the lock.
    await asyncio.gather(*(source.start() for source in sources))
    assert sorted(source.role() for source in sources) == ["leader", "standby", "standby"]
    assert all(source.health() is None for source in sources)
    insert(db, range(3))
    await eventually(lambda: memlog.bounds("acme").last_seq == 3, what="the leader streams")
    assert await ids_in(memlog) == [0, 1, 2]


async def test_a_slot_streamed_without_the_leader_lock_is_waited_for_then_reported(
    db: Db, memlog: MemoryLog
) -> None:
    routable_table(db)
    creator = db.source(memlog)
    await creator.start()  # creates the publication and the slot
    insert(db, range(2))
    await eventually(lambda: memlog.bounds("acme").last_seq == 2, what="first rows")
    await creator.stop()

    # Another consumer (not athena-cdc: it takes no lock) streams the slot.
    replication = psycopg2.extras.LogicalReplicationConnection
    foreign = psycopg2.connect(db.dsn, connection_factory=replication)
    try:
        foreign.cursor().start_replication(
            slot_name=db.slot,
            decode=False,
            options={"proto_version": "1", "publication_names": "athena_cdc"},
        )
        source = db.source(memlog, busy_grace=1.0, takeover_interval=0.2)
        await source.start()
        # "replication slot ... is active for PID ...": someone else is active, so wait.
        assert (source.leader, source.role(), source.health()) == (False, "standby", None)
        await eventually(lambda: "is active for PID" in (source.health() or ""), wait=10,
                         what="the busy slot reported after the grace")
        assert "no athena-cdc process holds its leader lock" in (source.health() or "")
        assert "\n" not in (source.health() or "")
    finally:
        foreign.close()
    await eventually(lambda: source.leader, wait=10, what="streaming once the slot is free")
    assert source.health() is None
    insert(db, range(2, 4))
    await eventually(lambda: memlog.bounds("acme").last_seq == 4, what="rows after the wait")
    assert await ids_in(memlog) == [0, 1, 2, 3]
