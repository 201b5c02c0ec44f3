"""The foundation's concurrency test (tests/hub/test_concurrency.py: 200 clients, 10
producers, random subscribes and travels) against ``--workers 2`` on sqlite: clients
and producers spread over both workers, and every check of one process still holds."""

from __future__ import annotations

import random
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from athena_cdc.server.workers import WORKER_HEADER
from tests.hub.test_concurrency import drive_and_check
from tests.workers._support import workers_process


async def test_many_clients_and_producers_on_two_workers(tmp_path: Path) -> None:
    on_worker: dict[str, int] = {}

    def count_worker(ws: ClientConnection) -> None:
        assert ws.response is not None
        worker = ws.response.headers[WORKER_HEADER]
        on_worker[worker] = on_worker.get(worker, 0) + 1

    args = ["--store", "sqlite", "--data-dir", str(tmp_path / "data")]
    with workers_process(tmp_path, *args) as proc:
        await drive_and_check(proc, random.Random(20261129), on_connect=count_worker)
    assert sorted(on_worker) == ["1", "2"], on_worker
