"""The foundation's concurrency test (tests/hub/test_concurrency.py: 200 clients, 10
producers, random subscribes and travels) against ``--workers 2`` on sqlite: clients
and producers spread over both workers, and every check of one process still holds."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from websockets.asyncio.client import connect

from athena_cdc.server.workers import WORKER_HEADER
from tests.hub.test_concurrency import CHANNELS, CLIENTS, PRODUCERS, Truth, Watcher, produce
from tests.workers._support import workers_process


async def test_many_clients_and_producers_on_two_workers(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    truth = Truth()
    args = ["--store", "sqlite", "--data-dir", str(tmp_path / "data")]
    with workers_process(tmp_path, *args) as proc:
        sockets = []
        watchers: list[Watcher] = []
        on_worker: dict[str, int] = {}
        try:
            for i in range(CLIENTS):
                ws = await connect(
                    proc.ws,
                    additional_headers={"X-Athena-Client": CHANNELS[i % len(CHANNELS)]},
                    max_size=None,
                )
                sockets.append(ws)
                assert ws.response is not None
                worker = ws.response.headers[WORKER_HEADER]
                on_worker[worker] = on_worker.get(worker, 0) + 1
                hello = json.loads(await ws.recv())
                assert hello["status"] == "subscribed"
                watchers.append(Watcher(i, ws, truth, random.Random(rng.random())))
            assert sorted(on_worker) == ["1", "2"], on_worker
            readers = [asyncio.create_task(w.read()) for w in watchers]
            await asyncio.gather(
                *(produce(proc, truth, random.Random(rng.random()), p) for p in range(PRODUCERS)),
                *(w.act() for w in watchers),
            )
            final = dict(truth.confirmed)
            for _ in range(300):
                if all(w.caught_up(final) for w in watchers):
                    break
                await asyncio.sleep(0.1)
            lagging = [w.name for w in watchers if not w.caught_up(final)]
            assert not lagging, f"{len(lagging)} clients did not catch up"
        finally:
            for ws in sockets:
                await ws.close()
        for task in readers:
            await task

    errors = [e for w in watchers for e in w.errors]
    assert not errors, "\n".join(errors[:30])
    for w in watchers:
        assert w.own_seen == set(range(1, final.get(w.name, 0) + 1)), w.name
        for channel, seq, ts_ms, payload in w.seen:
            assert truth.events[(channel, seq)] == (ts_ms, payload), (w.name, channel, seq)
    assert len(truth.events) == sum(final.values())  # seqs 1..last, each assigned once
    assert sum(w.travels_checked for w in watchers) > CLIENTS  # the travels did happen
