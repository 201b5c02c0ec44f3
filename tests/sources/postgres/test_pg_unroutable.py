"""Tables whose replica identity lacks the routing column, against a real PostgreSQL.

Their DELETEs (and the old side of a channel-moving UPDATE) carry no routing value,
so the source refuses them at start with one line saying how to fix the table, takes
a fallback only when asked to (``--pg-unroutable``), and stops -- loudly, not by
dropping rows -- when such a table joins the publication while it streams. A row
that moves to another channel reaches both channels' subscribers.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from athena_cdc.config import Settings
from athena_cdc.log.memory import MemoryLog
from athena_cdc.sources.postgres import SourceConfigError
from tests.protocol._support import client
from tests.support.servers import ServerProcess, running_server

from .conftest import Db, eventually, read
from .test_pg_end_to_end import wait_ready

FIX = "ALTER TABLE public.orders REPLICA IDENTITY FULL;"


def serve(db: Db, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--port", "0", "--store", "memory",
         "--source", db.dsn, "--pg-slot", db.slot, *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )


async def test_serve_refuses_an_unroutable_table_with_one_line(db: Db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE orders (id serial PRIMARY KEY, organization_id text, total numeric)")
    result = serve(db, tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line.startswith("athena-cdc: error: ") and result.stderr.endswith(line + "\n")
    assert "table public.orders" in line and "primary key (id)" in line and FIX in line
    assert "--pg-unroutable" in line
    # Refused before creating the slot: nothing is left holding WAL.
    assert not db.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", db.slot)
    # The fix it names is enough: the same command now starts and gets ready.
    db.sql(FIX)
    args = ["--store", "memory", "--source", db.dsn, "--pg-slot", db.slot]
    with ServerProcess(args, log_path=tmp_path / "server.log") as server:
        wait_ready(server)
        assert server.terminate() == 0


async def test_which_identities_are_routable(db: Db, memlog: MemoryLog) -> None:
    db.sql("CREATE TABLE full_row (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE full_row REPLICA IDENTITY FULL")
    db.sql("CREATE TABLE in_key (organization_id text, id int, PRIMARY KEY (organization_id, id))")
    db.sql("CREATE TABLE by_index (id int PRIMARY KEY, organization_id text NOT NULL)")
    db.sql("CREATE UNIQUE INDEX by_index_route ON by_index (organization_id, id)")
    db.sql("ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_route")
    db.sql("CREATE TABLE no_key (organization_id text)")  # PostgreSQL refuses its deletes
    db.sql("CREATE TABLE no_column (id int PRIMARY KEY, what text)")  # default channel/skip
    db.sql("CREATE TABLE audit (id int PRIMARY KEY, organization_id text)")  # override
    db.sql('CREATE TABLE "Odd Name" (id int PRIMARY KEY, organization_id text)')
    db.sql("CREATE TABLE zz_second (id int PRIMARY KEY, organization_id text)")
    settings = db.settings(pg_table_channels={"public.audit": "audit"})
    with pytest.raises(SourceConfigError) as caught:
        await db.source(memlog, settings).start()
    message = str(caught.value)
    assert 'ALTER TABLE public."Odd Name" REPLICA IDENTITY FULL;' in message
    assert "likewise 1 more: ALTER TABLE public.zz_second REPLICA IDENTITY FULL;" in message
    for fine in ("full_row", "in_key", "by_index", "no_key", "no_column", "audit"):
        assert f"public.{fine}" not in message
    # A replica-identity index without the column is as unroutable as a key without it.
    db.sql('DROP TABLE "Odd Name", zz_second')
    db.sql("CREATE UNIQUE INDEX by_index_id ON by_index (id)")
    db.sql("ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_id")
    with pytest.raises(SourceConfigError, match=r"replica identity index \(id\)"):
        await db.source(memlog, settings).start()
    db.sql("ALTER TABLE by_index REPLICA IDENTITY FULL")
    source = db.source(memlog, settings)
    await source.start()
    assert source.health() is None
    # A publication of inserts only has no old rows to route.
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, organization_id text)")
    db.sql("CREATE PUBLICATION inserts FOR TABLE orders WITH (publish = 'insert')")
    inserts = db.source(memlog, Settings(pg_publication="inserts", pg_slot=db.slot + "_i"))
    await inserts.start()
    await inserts.stop()
    await eventually(lambda: not db.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                                        "AND active", db.slot + "_i"), what="slot released")
    db.sql("SELECT pg_drop_replication_slot(%s)", db.slot + "_i")


async def test_fallbacks_are_opt_in_and_logged_once_per_table(
    db: Db, memlog: MemoryLog, caplog: pytest.LogCaptureFixture
) -> None:
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, organization_id text)")
    with pytest.raises(SourceConfigError, match="--default-channel"):
        await db.source(memlog, db.settings(pg_unroutable="default-channel")).start()
    source = db.source(memlog, db.settings(pg_unroutable="skip"))
    with caplog.at_level(logging.WARNING, "athena_cdc.sources.postgres"):
        await source.start()
        for i in range(3):
            db.sql("INSERT INTO orders VALUES (%s, 'acme')", i)
        db.sql("UPDATE orders SET organization_id = 'beta' WHERE id = 0")
        db.sql("DELETE FROM orders")
        await eventually(lambda: source.transactions == 5, what="5 transactions")
    assert [b["op"] for _, b in await read(memlog, "acme")] == ["insert"] * 3
    assert [b["op"] for _, b in await read(memlog, "beta")] == ["update"]  # new channel only
    assert (source.rows_skipped, source.rows_unroutable) == (3, 4)
    [warning] = [r.getMessage() for r in caplog.records if "public.orders" in r.getMessage()]
    assert FIX in warning and "DELETEs are skipped" in warning


async def test_table_joining_the_publication_while_streaming(
    db: Db, memlog: MemoryLog, caplog: pytest.LogCaptureFixture
) -> None:
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE orders REPLICA IDENTITY FULL")
    db.sql("CREATE PUBLICATION athena_cdc FOR TABLE orders")
    source = db.source(memlog)
    with caplog.at_level(logging.WARNING, "athena_cdc.sources.postgres"):
        await source.start()
        db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
        db.sql("ALTER PUBLICATION athena_cdc ADD TABLE items")
        db.sql("INSERT INTO items VALUES (1, 'acme')")  # inserts are routable: they stream
        await eventually(lambda: memlog.bounds("acme").last_seq == 1, what="the insert")
        db.sql("DELETE FROM items")
        db.sql("INSERT INTO orders VALUES (1, 'acme')")
        await eventually(lambda: source.health() is not None, what="the source to stop")
    reason = source.health()
    assert reason is not None and "table public.items" in reason
    assert "ALTER TABLE public.items REPLICA IDENTITY FULL;" in reason
    assert "--pg-unroutable" in reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "public.items" in errors[0].getMessage()
    assert source.rows_skipped == 0 and memlog.bounds("acme").last_seq == 1  # nothing dropped
    await source.stop()
    # The operator fixes the table for the future and passes what is already written.
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")
    source = db.source(memlog, db.settings(pg_unroutable="skip"))
    await source.start()
    await eventually(lambda: memlog.bounds("acme").last_seq == 2, what="the orders insert")
    await eventually(lambda: source.rows_skipped == 1, what="the delete to be skipped")
    assert [(b["table"], b["op"]) for _, b in await read(memlog, "acme")] == [
        ("items", "insert"), ("orders", "insert")]  # exactly once across the stop
    db.sql("INSERT INTO items VALUES (2, 'acme'); DELETE FROM items")  # now routable
    await eventually(lambda: memlog.bounds("acme").last_seq == 4, what="the routed delete")
    assert source.health() is None and source.rows_unroutable == 1


async def test_row_moving_channel_reaches_both_subscribers_in_order(db: Db) -> None:
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, organization_id text, total int)")
    db.sql("ALTER TABLE orders REPLICA IDENTITY FULL")
    # Default identity with the routing column in the key: the old key is sent on a move.
    db.sql("CREATE TABLE lines (organization_id text, id int, qty int, "
           "PRIMARY KEY (organization_id, id))")
    async with (
        running_server(store="memory", source=[db.dsn], pg_slot=db.slot) as server,
        client(server, "acme") as acme,
        client(server, "beta") as beta,
    ):
        db.sql("INSERT INTO orders VALUES (1, 'acme', 10)")
        db.sql("UPDATE orders SET organization_id = 'beta', total = 11 WHERE id = 1")
        db.sql("UPDATE orders SET total = 12")
        db.sql("INSERT INTO lines VALUES ('acme', 1, 5)")
        db.sql("UPDATE lines SET organization_id = 'beta'")
        db.sql("DELETE FROM lines")
        db.sql("DELETE FROM orders")
        got_acme = [m["data"]["payload"] for m in await acme.recv_events(4, within=20)]
        got_beta = [m["data"]["payload"] for m in await beta.recv_events(5, within=20)]
    assert [(p["table"], p["op"]) for p in got_acme] == [
        ("orders", "insert"), ("orders", "update"), ("lines", "insert"), ("lines", "update")]
    assert [(p["table"], p["op"]) for p in got_beta] == [
        ("orders", "update"), ("orders", "update"), ("lines", "update"), ("lines", "delete"),
        ("orders", "delete")]
    # The move is one event, the same on both channels: old row here, new row there.
    assert got_acme[1] == got_beta[0]
    assert got_acme[1]["old"]["organization_id"] == "acme"
    assert got_acme[1]["new"]["organization_id"] == "beta"
    assert got_acme[3] == got_beta[2] and got_acme[3]["old"] == {"organization_id": "acme",
                                                                 "id": 1}


def test_an_unknown_fallback_is_a_one_line_config_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--store", "memory", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"ATHENA_CDC_PG_UNROUTABLE": "ignore", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "athena-cdc: error: ATHENA_CDC_PG_UNROUTABLE: invalid value 'ignore': "
        "expected one of refuse, default-channel, skip"]
