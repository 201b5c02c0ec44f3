"""Every log has an epoch (invariant 6): sent in "subscribed" and every "travel_complete",
kept by the sqlite log across restarts, new with each start of the memory log; and a
sqlite log that cannot rule out having lost acknowledged events refuses to open under
its epoch (or continues under a new one when told to)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from athena_cdc.log.base import NewEvent, TravelQuery
from athena_cdc.log.epoch import HIGHWATER_FILE, HighWater, LogDamaged
from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.server.app import AthenaServer
from tests.protocol._support import client, publish
from tests.support.servers import running_server


def new(channel: str, payload: object) -> NewEvent:
    return NewEvent(channel, orjson.dumps(payload))


async def epochs_seen(server: AthenaServer) -> set[str]:
    """The epoch of each message that carries one: subscribed (on connect and in reply
    to a subscribe) and travel_complete. Checks they sit after the original keys."""
    async with client(server, "a", subscribed=False) as c:
        hello = await c.recv()
        assert list(hello) == ["status", "client_id", "message", "epoch"]
        reply = await c.request({"type": "subscribe", "organization_id": "b"})
        assert list(reply) == ["status", "client_id", "organization_id", "epoch"]
        _, ack = await c.travel(organization_id="a", since_seq=0)
        assert list(ack)[-1] == "epoch"
        return {hello["epoch"], reply["epoch"], ack["epoch"]}


async def test_every_subscribed_and_travel_complete_carries_the_logs_epoch(
    server: AthenaServer,
) -> None:
    (epoch,) = await epochs_seen(server)
    assert epoch == server.log.epoch
    assert 8 <= len(epoch) <= 16 and epoch.replace("-", "").replace("_", "").isalnum()


async def test_memory_log_has_a_new_epoch_at_each_start() -> None:
    async with running_server(store="memory") as server:
        first = await epochs_seen(server)
    async with running_server(store="memory") as server:
        second = await epochs_seen(server)
    assert len(first) == len(second) == 1 and first != second


async def test_sqlite_log_keeps_its_epoch_across_a_clean_restart(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    async with running_server(data_dir=data) as server:
        await publish(server, [{"organization_id": "a", "payload": 1}])
        first = await epochs_seen(server)
    async with running_server(data_dir=data) as server:
        assert await epochs_seen(server) == first
        (answer,) = await publish(server, [{"organization_id": "a", "payload": 2}])
        assert answer["seq"] == 2


def as_after_a_crash(data: Path, boot: str | None) -> HighWater:
    """Make seq-highwater say what a crash leaves: the stop was not clean (and, for a
    crash of the machine, another boot id). Returns the record as it was."""
    path = data / HIGHWATER_FILE
    mark = HighWater.decode(path.read_bytes())
    path.write_bytes(HighWater(mark.epoch, mark.appended, False, boot or mark.boot).encode())
    return mark


async def open_log(data: Path, **options: object) -> SqliteLog:
    log = SqliteLog(data, **options)  # type: ignore[arg-type]
    await log.open()
    return log


async def test_a_data_dir_from_a_version_without_epochs_gets_one(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.append([new("a", i) for i in range(3)])
    await log.close()
    # What the previous version left behind: no meta table, no seq-highwater.
    con = sqlite3.connect(log.path)
    con.execute("DROP TABLE meta")
    con.commit()
    con.close()
    (tmp_path / HIGHWATER_FILE).unlink()

    log = await open_log(tmp_path)
    epoch = log.epoch
    (event,) = await log.append([new("a", 3)])
    assert event.seq == 4
    await log.close()
    log = await open_log(tmp_path)
    try:
        assert log.epoch == epoch
        assert [e.seq for e in (await log.travel(TravelQuery(("a",), 0, None, 9))).events] == [
            1,
            2,
            3,
            4,
        ]
    finally:
        await log.close()


async def test_a_database_without_its_highwater_file_is_refused(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.append([new("a", 1)])
    await log.close()
    (tmp_path / HIGHWATER_FILE).unlink()  # or: the database was copied into a new dir
    with pytest.raises(LogDamaged, match=f"data dir {tmp_path}: .*{HIGHWATER_FILE} is missing"):
        await open_log(tmp_path)


async def test_a_database_from_another_log_is_refused(tmp_path: Path) -> None:
    for name in ("one", "two"):
        log = await open_log(tmp_path / name)
        await log.append([new("a", name)])
        await log.close()
    (tmp_path / "two" / "events.sqlite3").write_bytes(
        (tmp_path / "one" / "events.sqlite3").read_bytes()
    )
    with pytest.raises(LogDamaged, match="the database was replaced"):
        await open_log(tmp_path / "two")


async def test_an_older_copy_of_the_database_is_refused_then_continued_under_a_new_epoch(
    tmp_path: Path,
) -> None:
    log = await open_log(tmp_path)
    await log.append([new("a", i) for i in range(5)])
    await log.close()
    backup = log.path.read_bytes()
    log = await open_log(tmp_path)
    epoch = log.epoch
    handed_out = [e.seq for e in await log.append([new("a", i) for i in range(5, 8)])]
    await log.close()
    log.path.write_bytes(backup)  # "restored from a backup"

    with pytest.raises(LogDamaged, match="3 fewer than were acknowledged") as refused:
        await open_log(tmp_path)
    assert "--on-damage new-epoch" in str(refused.value) and "\n" not in str(refused.value)

    log = await open_log(tmp_path, on_damage="new-epoch")
    try:
        assert log.epoch != epoch
        again = [e.seq for e in await log.append([new("a", "x")])]
        assert again == [6] and set(again) <= set(handed_out)  # reused, but under a new epoch
    finally:
        await log.close()
    log = await open_log(tmp_path)  # the new epoch is now the log's own
    await log.close()


async def test_an_unreadable_highwater_file_is_refused(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.close()
    path = tmp_path / HIGHWATER_FILE
    path.write_bytes(path.read_bytes().replace(b'"appended":0', b'"appended":9'))
    with pytest.raises(LogDamaged, match=f"{HIGHWATER_FILE} is unreadable"):
        await open_log(tmp_path)


async def test_synchronous_normal_after_a_machine_crash_cannot_be_trusted(
    tmp_path: Path,
) -> None:
    log = await open_log(tmp_path, synchronous="normal")
    await log.append([new("a", 1)])
    await log.close()
    as_after_a_crash(tmp_path, boot=None)  # of the process: the kernel kept the writes
    log = await open_log(tmp_path, synchronous="normal")
    await log.close()
    mark = as_after_a_crash(tmp_path, boot="another-boot")  # of the machine
    with pytest.raises(LogDamaged, match="synchronous normal"):
        await open_log(tmp_path, synchronous="normal")
    # synchronous=full fsyncs every commit: the same state is trusted.
    log = await open_log(tmp_path)
    assert log.epoch == mark.epoch
    await log.close()


async def test_a_corrupt_database_is_refused_even_when_told_to_take_a_new_epoch(
    tmp_path: Path,
) -> None:
    log = await open_log(tmp_path)
    await log.append([new(f"c{i}", "x" * 500) for i in range(2000)])
    await log.close()
    with log.path.open("r+b") as f:  # overwrite pages in the middle of the file
        f.seek(log.path.stat().st_size // 2)
        f.write(b"\xa5" * 16384)
    as_after_a_crash(tmp_path, boot=None)  # a clean stop would skip the (costly) check
    with pytest.raises(LogDamaged, match="is corrupt"):
        await open_log(tmp_path, on_damage="new-epoch")
