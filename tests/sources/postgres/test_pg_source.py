"""The PostgreSQL source against a real (throwaway) PostgreSQL: no mocks."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from athena_cdc.log.base import Event, SourcePosition
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.sources.postgres import PostgresSource, SourceConfigError
from tests.pg_cluster import pg_cluster

from .conftest import Db, eventually, read

LSN = re.compile(r"[0-9A-F]+/[0-9A-F]+")


async def test_every_operation(db: Db, memlog: MemoryLog) -> None:
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, organization_id text, total int)")
    db.sql("CREATE TABLE notes (id int PRIMARY KEY, organization_id text, note text)")
    db.sql("ALTER TABLE notes REPLICA IDENTITY FULL")
    # orders' key lacks organization_id: its deletes go to the default channel (fallback).
    source = db.source(memlog, db.settings(default_channel="misc",
                                           pg_unroutable="default-channel"))
    await source.start()
    assert source.health() is None
    db.sql("INSERT INTO orders VALUES (1, 'acme', 10)")
    db.sql("UPDATE orders SET total = 11 WHERE id = 1")
    db.sql("UPDATE orders SET id = 2 WHERE id = 1")  # key change: old key is sent
    db.sql("DELETE FROM orders WHERE id = 2")
    db.sql("INSERT INTO notes VALUES (1, 'acme', 'a')")
    db.sql("UPDATE notes SET note = 'b'")
    db.sql("DELETE FROM notes")
    db.sql("TRUNCATE orders")
    await eventually(lambda: memlog.bounds("misc").last_seq == 2, what="truncate")
    acme = [body for _, body in await read(memlog, "acme")]
    # Default replica identity: old is null, or the key when the key changed; the
    # delete's old row holds only the key, so it has no organization_id: default channel.
    summary = [(b["op"], b["table"], b["new"], b["old"]) for b in acme]
    assert summary == [
        ("insert", "orders", {"id": 1, "organization_id": "acme", "total": 10}, None),
        ("update", "orders", {"id": 1, "organization_id": "acme", "total": 11}, None),
        ("update", "orders", {"id": 2, "organization_id": "acme", "total": 11}, {"id": 1}),
        ("insert", "notes", {"id": 1, "organization_id": "acme", "note": "a"}, None),
        ("update", "notes", {"id": 1, "organization_id": "acme", "note": "b"},
         {"id": 1, "organization_id": "acme", "note": "a"}),
        ("delete", "notes", None, {"id": 1, "organization_id": "acme", "note": "b"}),
    ]
    misc = [body for _, body in await read(memlog, "misc")]
    assert [(b["op"], b["old"]) for b in misc] == [("delete", {"id": 2}), ("truncate", None)]
    for body in acme + misc:
        assert body["schema"] == "public" and LSN.fullmatch(body["lsn"])
        assert isinstance(body["xid"], int) and body["commit_ts_ms"] > 1_600_000_000_000
    # Counted when the append returns to the source, a moment after the log has them.
    await eventually(lambda: source.transactions == 8, what="8 transactions counted")
    assert source.rows_applied == 8
    # Both updates and the delete of orders had no old channel; the fallback counted them.
    assert source.rows_unroutable == 3


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE everything (
    id int, organization_id text,
    i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, nan float8, num numeric(12,4),
    b bool, j json, jb jsonb, ts timestamp, tstz timestamptz, d date, t time, ttz timetz,
    iv interval, by bytea, u uuid, m mood, tx text, vc varchar(10), ch char(3),
    ai int[], ai2 int8[][], at text[], af float8[], ab bool[], an numeric[], ajb jsonb[],
    ip inet, big text,
    PRIMARY KEY (id, organization_id)  -- the routing column in the key: deletes are routable
)"""

ROW = """
INSERT INTO everything VALUES (
    1, 'acme', -2, 2147483647, 9223372036854775807, 1.5, 0.1, 'NaN', 12345678.1234,
    true, '{"a": [1, "x"], "b": null}', '{"z": {"y": 1.25}}',
    '2024-02-29 23:59:59.123456', '2024-02-29 23:59:59.5+02', '2024-02-29', '12:34:56',
    '12:34:56+05:30', '1 day 02:03:04', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    'happy', 'hé "quoted"', 'abc', 'ab',
    '{1,NULL,3}', '{{1,2},{3,4}}', '{"a b","c\\"d",NULL,"NULL",""}', '{1.5,-0.25}',
    '{t,f}', '{1.10,2}', ARRAY['{"k": 1}'::jsonb], '10.0.0.1/8', repeat(md5('x'), 500)
)"""


async def test_type_mapping(db: Db, memlog: MemoryLog) -> None:
    for statement in TYPES.split(";"):
        db.sql(statement)
    source = db.source(memlog)
    await source.start()
    db.sql(ROW)
    db.sql("INSERT INTO everything (id, organization_id) VALUES (2, 'acme')")
    # big is TOASTed (5000 chars... compressible; force out-of-line storage):
    db.sql("ALTER TABLE everything ALTER COLUMN big SET STORAGE EXTERNAL")
    db.sql("UPDATE everything SET big = repeat(md5('y'), 500) WHERE id = 1")
    db.sql("UPDATE everything SET i2 = 3 WHERE id = 1")  # big unchanged: not sent
    await eventually(lambda: memlog.bounds("acme").last_seq == 4)
    events = [body for _, body in await read(memlog, "acme")]
    new = events[0]["new"]
    big = new.pop("big")
    assert big == "9dd4e461268c8034f5c8564e155c67a6" * 500
    assert new == {
        "id": 1, "organization_id": "acme", "i2": -2, "i4": 2147483647,
        "i8": 9223372036854775807, "f4": 1.5, "f8": 0.1, "nan": "NaN", "num": "12345678.1234",
        "b": True, "j": {"a": [1, "x"], "b": None}, "jb": {"z": {"y": 1.25}},
        "ts": "2024-02-29T23:59:59.123456", "tstz": "2024-02-29T21:59:59.5+00:00",
        "d": "2024-02-29", "t": "12:34:56", "ttz": "12:34:56+05:30", "iv": "P1DT2H3M4S",
        "by": "\\x00ff10", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "m": "happy",
        "tx": 'hé "quoted"', "vc": "abc", "ch": "ab ",
        "ai": [1, None, 3], "ai2": [[1, 2], [3, 4]], "at": ["a b", 'c"d', None, "NULL", ""],
        "af": [1.5, -0.25], "ab": [True, False], "an": ["1.10", "2"], "ajb": [{"k": 1}],
        "ip": "10.0.0.1/8",
    }
    nulls = events[1]["new"]
    assert nulls["id"] == 2 and all(v is None for k, v in nulls.items()
                                    if k not in ("id", "organization_id"))
    unchanged = events[3]
    assert unchanged["new"]["i2"] == 3 and "big" not in unchanged["new"]
    assert unchanged["unchanged_toast"] == ["big"]


async def test_transaction_spanning_channels_and_skipped_rows(db: Db, memlog: MemoryLog) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # routable deletes
    db.sql("CREATE TABLE audit (id serial PRIMARY KEY, what text)")
    settings = db.settings(pg_table_channels={"public.audit": "audit-log"})
    source = db.source(memlog, settings)
    await source.start()
    db.sql("BEGIN; INSERT INTO items VALUES (1, 'acme'), (2, 'beta'), (3, NULL), (4, 'acme');"
           "INSERT INTO audit (what) VALUES ('bulk'); COMMIT")
    await eventually(lambda: source.transactions == 1)
    acme, beta, audit = [await read(memlog, c) for c in ("acme", "beta", "audit-log")]
    assert [(s, b["new"]["id"]) for s, b in acme] == [(1, 1), (2, 4)]
    assert [(s, b["new"]["id"]) for s, b in beta] == [(1, 2)]
    assert [b["new"]["what"] for _, b in audit] == ["bulk"]
    bodies = [b for _, b in acme + beta + audit]
    assert len({(b["lsn"], b["xid"], b["commit_ts_ms"]) for b in bodies}) == 1
    assert (source.rows_applied, source.rows_skipped) == (4, 1)
    # Applied in one durable write: the log holds the position of the commit.
    assert source.position_key is not None
    assert await memlog.get_position(source.position_key) == bodies[0]["lsn"]


class SlowSqliteLog(SqliteLog):
    """A sqlite log whose appends take a little longer, so a test can stop between them."""

    async def append(self, batch: Any, position: SourcePosition | None = None) -> list[Event]:
        await asyncio.sleep(0.005)
        return await super().append(batch, position)


def writer(db: Db, commits: int, stop: threading.Event) -> threading.Thread:
    """Single-row commits on a background thread, alternating two channels."""

    def run() -> None:
        conn = db.cluster.connect(db.name)
        with conn.cursor() as cur:
            for i in range(commits):
                if stop.is_set():
                    break
                cur.execute("INSERT INTO items VALUES (%s, %s)", (i, "acme" if i % 2 else "beta"))
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def test_exactly_once_across_restarts(db: Db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # routable deletes
    data = str(tmp_path / "log")
    # The slot is never confirmed by the first two sources (feedback far in the
    # future), so PostgreSQL sends everything again: only the log's position can
    # keep a change from being appended twice.
    # A one-chunk hand-off keeps the reader from running ahead of the log.
    kw: dict[str, Any] = dict(chunk_events=100, append_max_events=100, handoff_bytes=1,
                              feedback_interval=3600, status_interval=3600)

    async def open_log() -> SqliteLog:
        log = SlowSqliteLog(data, retention_events=1_000_000, memory_limit=4 * 1024**2)
        await log.open()
        return log

    # 1. Stop in the middle of a 3,000-row transaction appended in chunks.
    log = await open_log()
    source = db.source(log, **kw)
    await source.start()
    db.sql("INSERT INTO items SELECT g, CASE WHEN g % 2 = 1 THEN 'acme' ELSE 'beta' END "
           "FROM generate_series(100000, 102999) g")
    await eventually(lambda: "#" in (source.applied_position or ""), what="a partial position")
    await source.stop()
    partial = source.applied_position
    await log.close()
    assert partial is not None and "#" in partial

    # 2. Restart, and stop again while single-row commits stream in.
    log = await open_log()
    source = db.source(log, **kw)
    await source.start()
    stop_writing = threading.Event()
    thread = writer(db, 1000, stop_writing)
    await eventually(lambda: source.transactions >= 200, what="200 commits")
    await source.stop()
    await log.close()
    await asyncio.to_thread(thread.join)

    # 3. Restart with normal feedback and let it catch up.
    log = await open_log()
    source = db.source(log)
    await source.start()
    expected = db.sql("SELECT organization_id, id FROM items ORDER BY organization_id, id")
    await eventually(lambda: log.bounds("acme").last_seq + log.bounds("beta").last_seq
                     == len(expected), what="every row", wait=60)
    for channel in ("acme", "beta"):
        events = await read(log, channel)
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1))  # no gap
        ids = [body["new"]["id"] for _, body in events]
        # Commit order: the bulk transaction first, then the single-row commits.
        assert ids == sorted(ids, key=lambda i: (i < 100000, i))
        assert sorted(ids) == sorted(i for c, i in expected if c == channel)
    await asyncio.sleep(0.1)
    assert log.bounds("acme").last_seq + log.bounds("beta").last_seq == len(expected)
    await source.stop()
    await log.close()


async def test_postgres_restart_under_the_source(db: Db, memlog: MemoryLog) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # routable deletes
    source = db.source(memlog)
    await source.start()
    db.sql("INSERT INTO items VALUES (1, 'acme')")
    await eventually(lambda: memlog.bounds("acme").last_seq == 1)
    db.cluster.stop("fast")
    try:
        await eventually(lambda: source.health() is not None, what="health to report")
        reason = source.health()
        assert reason is not None and source.name in reason
    finally:
        db.cluster.start()
    db.sql("INSERT INTO items VALUES (2, 'acme')")
    await eventually(lambda: source.health() is None, what="recovery", wait=30)
    await eventually(lambda: memlog.bounds("acme").last_seq == 2, what="the row after restart")
    assert [b["new"]["id"] for _, b in await read(memlog, "acme")] == [1, 2]
    assert source.reconnects >= 1


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_large_transaction_with_bounded_memory(db: Db, tmp_path: Path) -> None:
    rows = 100_000
    db.sql("CREATE TABLE wide (id int PRIMARY KEY, organization_id text, body text)")
    db.sql("ALTER TABLE wide REPLICA IDENTITY FULL")  # routable deletes
    log = SqliteLog(str(tmp_path / "log"), retention_events=1_000_000,
                    memory_limit=2 * 1024**2, synchronous="normal")
    await log.open()
    source = db.source(log, handoff_bytes=4 * 1024**2, chunk_bytes=1024**2)
    await source.start()
    baseline = peak = rss_bytes()
    db.sql(f"INSERT INTO wide SELECT g, 'acme', repeat(md5(g::text), 8) "
           f"FROM generate_series(1, {rows}) g")
    loop = asyncio.get_running_loop()
    started = loop.time()

    def done() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes())
        # The source counts the transaction when its last append returns, a moment
        # after the log (and so the bounds) has the rows.
        return log.bounds("acme").last_seq == rows and source.transactions == 1

    await eventually(done, wait=90, what="100,000 rows")
    elapsed = loop.time() - started
    growth = peak - baseline
    assert source.handoff is not None
    print(f"\n100,000-row transaction: {rows / elapsed:,.0f} rows/s commit→log, "
          f"RSS growth {growth / 1024**2:.1f} MiB, "
          f"hand-off peak {source.handoff.peak_bytes / 1024**2:.1f} MiB")
    # The rows' JSON alone is ~45 MB; holding the transaction would need far more.
    assert source.handoff.peak_bytes <= 4 * 1024**2 + 1024**2
    assert growth < 40 * 1024**2, f"RSS grew {growth / 1024**2:.0f} MiB"
    assert source.transactions == 1 and source.rows_applied == rows
    await source.stop()
    await log.close()


async def test_wal_level_replica_is_a_config_error(memlog: MemoryLog) -> None:
    with pg_cluster(wal_level="replica") as cluster:
        source = PostgresSource(cluster.dsn(), Db(cluster, "postgres", "x").settings(), memlog)
        with pytest.raises(SourceConfigError, match=r"wal_level is 'replica'.*wal_level = logical"):
            await source.start()


async def test_role_without_replication_is_a_config_error(db: Db, memlog: MemoryLog) -> None:
    db.sql("DROP ROLE IF EXISTS plain_user")
    db.sql("CREATE ROLE plain_user LOGIN")
    source = PostgresSource(db.cluster.dsn(db.name, "plain_user"), db.settings(), memlog)
    with pytest.raises(SourceConfigError, match="REPLICATION"):
        await source.start()
    assert "\n" not in str(SourceConfigError)


async def test_log_failure_is_retried_and_reported(db: Db) -> None:
    class FlakyLog(MemoryLog):
        failures = 3

        async def append(self, batch: Any, position: SourcePosition | None = None) -> list[Event]:
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")
            return await super().append(batch, position)

    log = FlakyLog()
    await log.open()
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # routable deletes
    source = db.source(log)
    await source.start()
    db.sql("INSERT INTO items VALUES (1, 'acme')")
    await eventually(lambda: "disk full" in (source.health() or ""), what="reported failure")
    await eventually(lambda: log.bounds("acme").last_seq == 1, what="retried append")
    await eventually(lambda: source.health() is None, what="health after the retry")
    assert source.append_failures == 3

