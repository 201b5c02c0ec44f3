"""The position fence across a takeover, on a real Redis: a stale leader's late append
is refused whole, whichever lands first, and each row is in the log once, in order.

A stale leader is one whose connection PostgreSQL has ended (a network cut, a pause
longer than ``wal_sender_timeout``) while a batch was still on its way to the log. The
test ends the connection with ``pg_terminate_backend`` while the leader's append is held
at a gate in front of the real store, then lets it through before or after the new
leader's first append."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import orjson
import pytest

from athena_cdc.log.base import Event, NewEvent, SourcePosition, StalePosition
from athena_cdc.log.redis import RedisLog
from tests.conftest import flush_redis

from .conftest import Db, eventually

DB = "/13"


class GatedLog(RedisLog):
    """The Redis store, with a gate that holds appends (to make one arrive late)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.open_gate = True
        self.held_events = 0  # events of the append waiting at the closed gate

    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        if not self.open_gate:
            self.held_events = len(batch)
            await eventually(lambda: self.open_gate, wait=60, what="the gate")
            self.held_events = 0
        return await super().append(batch, position)


@pytest.fixture
async def logs(redis_url: str) -> AsyncIterator[tuple[GatedLog, GatedLog]]:
    """Two processes' views of one Redis log."""
    flush_redis(redis_url + DB)
    first, second = GatedLog(redis_url + DB), GatedLog(redis_url + DB)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


async def test_a_batch_following_an_older_position_than_the_stored_one_is_refused(
    logs: tuple[GatedLog, GatedLog],
) -> None:
    log, _ = logs
    await log.append([NewEvent("a", b"1")], SourcePosition("pg", "0/20", after="0/0"))
    # Beyond the stored position, but written by one who believed the log was at 0/10.
    for after in ("0/0", "0/10", "0/20#5"):
        with pytest.raises(StalePosition, match="beyond the one this batch follows"):
            await log.append([NewEvent("a", b"2")], SourcePosition("pg", "0/30", after=after))
    assert await log.get_position("pg") == "0/20"
    (event,) = await log.append([NewEvent("a", b"3")], SourcePosition("pg", "0/30", after="0/20"))
    assert event.seq == 2
    # A position at or before the stored one stays refused, whatever it follows.
    with pytest.raises(StalePosition, match="not beyond"):
        await log.append([NewEvent("a", b"4")], SourcePosition("pg", "0/30", after="0/30"))


@pytest.mark.parametrize("late_append_lands", ["after", "before"])
async def test_a_stale_leaders_late_append_is_harmless(
    db: Db, logs: tuple[GatedLog, GatedLog], late_append_lands: str
) -> None:
    old_log, new_log = logs
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")
    old = db.source(old_log, takeover_interval=0.2)
    await old.start()
    new = db.source(new_log, takeover_interval=0.2)
    await new.start()
    assert old.leader and not new.leader
    db.sql("INSERT INTO items VALUES (0, 'acme')")
    await eventually(lambda: old.events_appended == 1, what="the first row")

    old_log.open_gate = False
    for i in (1, 2, 3):
        db.sql("INSERT INTO items VALUES (%s, 'acme')", i)
    assert old.handoff is not None
    # All three read by the old leader: one append at the gate, the rest handed over.
    await eventually(lambda: old_log.held_events + len(old.handoff or ()) == 3,
                     what="rows 1-3 read by the old leader")
    if late_append_lands == "before":
        new_log.open_gate = False
    db.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
           "WHERE slot_name = %s", db.slot)
    await eventually(lambda: new.leader, wait=10, what="the takeover")

    if late_append_lands == "after":
        # The new leader appends rows 1-3 (the slot sends them again), then the old
        # leader's batch arrives: refused, and the old leader drops the rest.
        await eventually(lambda: new.events_appended == 3, what="the new leader's append")
        old_log.open_gate = True
        await eventually(lambda: old.stale_batches == 1, what="the late append refused")
        assert old.events_appended == 1
    else:
        # The old leader's late batches land first; the new leader's then finds the log
        # beyond where it read it, steps down, and whoever leads next starts from there.
        await eventually(lambda: new_log.held_events > 0, what="the new leader's append")
        old_log.open_gate = True
        await eventually(lambda: old.events_appended == 4, what="the late appends")
        new_log.open_gate = True
        await eventually(lambda: new.stale_batches == 1, what="the new leader refused")
        assert new.events_appended == 0
    await eventually(lambda: old.leader or new.leader, wait=10, what="a leader again")
    assert not (old.leader and new.leader)
    db.sql("INSERT INTO items VALUES (4, 'acme')")

    async def stored() -> list[tuple[int, int]]:
        events = await new_log.read_channel("acme", None, None, 100, newest=False)
        return [(e.seq, orjson.loads(e.message)["data"]["payload"]["new"]["id"]) for e in events]

    async def has_five() -> bool:
        return len(await stored()) >= 5

    await eventually(has_five, wait=10, what="row 4")
    assert await stored() == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]  # each row once, in order
