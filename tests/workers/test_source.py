"""``--workers 2 --source ...``: one PostgreSQL reader, in the supervisor, whose rows
reach the clients of every worker; its health and counters are on every worker."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from tests.protocol._support import seqs
from tests.sources.postgres.conftest import Db, eventually
from tests.workers._support import clients_on_every_worker, workers_process

ROWS = 20


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_one_postgres_reader_feeds_every_worker(db: Db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")
    args = ["--source", db.dsn, "--pg-slot", db.slot, "--store", "sqlite",
            "--data-dir", str(tmp_path / "data")]
    with workers_process(tmp_path, *args) as proc:
        # Rows committed before the reader's slot exists are not in it: wait for the
        # supervisor's reader to be streaming (slow to start on a loaded machine).
        await eventually(
            lambda: bool(db.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                                "AND active", db.slot)),
            what="the supervisor's reader streaming",
        )
        async with clients_on_every_worker(proc, "acme", at_least=1) as by_worker:
            for i in range(ROWS):
                db.sql("INSERT INTO items VALUES (%s, 'acme')", i)
            for clients in by_worker.values():
                for client in clients:
                    events = await client.recv_events(ROWS, within=20)
                    assert seqs(events) == list(range(1, ROWS + 1))
                    ids = [e["data"]["payload"]["new"]["id"] for e in events]
                    assert ids == list(range(ROWS))
        # One replication connection: the supervisor's.
        readers = db.sql(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name LIKE 'athena-cdc%'"
        )
        assert readers[0][0] == 1
        await asyncio.sleep(1.5)  # the supervisor reports its sources every second
        for _ in range(20):  # new connections: both workers answer
            status, _ = await asyncio.to_thread(get, proc.base + "/ready")
            assert status == 200
            _, text = await asyncio.to_thread(get, proc.base + "/metrics")
            applied = [
                line for line in text.splitlines()
                if line.startswith("athena_cdc_source_rows_applied_total{")
            ]
            assert len(applied) == 1 and applied[0].endswith(f" {float(ROWS)}"), applied
