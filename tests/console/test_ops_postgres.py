"""/api/stats with a PostgreSQL source: the slot's lag in bytes and the commit lag."""

from __future__ import annotations

import asyncio
import time

from tests.console.ops_http import Json, ok_json
from tests.sources.postgres.conftest import Db, db, pg  # noqa: F401 - fixtures
from tests.sources.postgres.test_pg_end_to_end import wait_ready
from tests.support.servers import server_process


async def test_stats_show_a_sources_slot_lag_in_bytes_and_its_commit_lag(db: Db) -> None:  # noqa: F811
    db.sql("CREATE TABLE orders (id serial PRIMARY KEY, organization_id text NOT NULL)")
    db.sql("ALTER TABLE orders REPLICA IDENTITY FULL")
    db.sql("CREATE PUBLICATION athena_cdc FOR TABLE orders")
    with server_process("--store", "memory", "--source", db.dsn, "--pg-slot", db.slot) as proc:
        wait_ready(proc)
        db.sql("INSERT INTO orders (organization_id) VALUES ('org_1'), ('org_2')")
        deadline = time.monotonic() + 30
        source: Json = None
        while time.monotonic() < deadline:
            (source,) = ok_json(proc, "/api/stats")["sources"]
            if source["rows_applied"] == 2 and source["lag_bytes"] is not None:
                break
            await asyncio.sleep(0.2)
        assert source["rows_applied"] == 2 and source["transactions"] == 1, source
        assert source["health"] is None and source["lag_error"] is None, source
        assert isinstance(source["lag_bytes"], int) and source["lag_bytes"] >= 0, source
        assert 0 <= source["lag_seconds"] < 30 and source["last_commit_lsn"], source
        assert source["unapplied_bytes"] == 0 and db.slot in source["name"], source
