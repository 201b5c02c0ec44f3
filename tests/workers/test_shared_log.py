"""``--workers 2`` on every store: the workers serve one log, with the guarantees of one
process (real processes, real sockets; which worker a connection lands on is the
kernel's choice, read from the ``X-Athena-Worker`` header)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.protocol._support import seqs
from tests.workers._support import (
    clients_on_every_worker,
    new_connection_each_time,
    post,
    workers_process,
)

EVENTS = 40


async def test_a_post_on_any_worker_reaches_subscribers_on_every_worker_in_order(
    store: str, tmp_path: Path
) -> None:
    with workers_process(tmp_path, "--store", store, "--data-dir", str(tmp_path / "d")) as proc:
        async with clients_on_every_worker(proc, "room") as by_worker:
            answered: dict[str, int] = {}
            async with new_connection_each_time() as http:
                for n in range(EVENTS):
                    worker, events = await post(
                        http, proc, {"organization_id": "room", "payload": {"n": n}}
                    )
                    assert events[0]["seq"] == n + 1  # one seq order, whoever appended
                    answered[worker] = answered.get(worker, 0) + 1
            assert sorted(answered) == ["1", "2"], answered  # both workers took POSTs
            for clients in by_worker.values():
                for client in clients:
                    events = await client.recv_events(EVENTS)
                    assert seqs(events) == list(range(1, EVENTS + 1))
                    assert [e["data"]["payload"] for e in events] == [
                        {"n": n} for n in range(EVENTS)
                    ]
                    await client.expect_silence(0.2)  # nothing twice


async def test_a_travel_on_any_worker_answers_from_the_shared_log(
    store: str, tmp_path: Path
) -> None:
    with workers_process(tmp_path, "--store", store, "--data-dir", str(tmp_path / "d")) as proc:
        async with new_connection_each_time() as http:
            for n in range(EVENTS):
                await post(http, proc, [{"organization_id": "t", "payload": n}])
        async with clients_on_every_worker(proc, "watcher", at_least=1) as by_worker:
            for clients in by_worker.values():
                events, ack = await clients[0].travel(organization_id="t", since_seq=10)
                assert seqs(events) == list(range(11, EVENTS + 1))
                assert ack["count"] == EVENTS - 10 and ack["gaps"] == []
                tail, ack = await clients[0].travel(organization_id="t", limit=5)
                assert seqs(tail) == list(range(EVENTS - 4, EVENTS + 1))
                assert ack["has_more"] is True


async def test_live_events_during_a_travel_follow_its_ack_on_every_worker(
    store: str, tmp_path: Path
) -> None:
    """A travel on one's own channel while other workers append: the live events held
    back during the travel follow the ack, none twice and none missing."""
    with workers_process(tmp_path, "--store", store, "--data-dir", str(tmp_path / "d")) as proc:
        async with clients_on_every_worker(proc, "busy") as by_worker:
            stop = asyncio.Event()

            async def produce() -> int:
                sent = 0
                async with new_connection_each_time() as http:
                    while not stop.is_set():
                        await post(http, proc, {"organization_id": "busy", "payload": sent})
                        sent += 1
                return sent

            producer = asyncio.create_task(produce())
            await asyncio.sleep(0.3)
            clients = [c for group in by_worker.values() for c in group]
            seen: dict[int, list[int]] = {i: [] for i in range(len(clients))}
            for client in clients:
                await client.send({"type": "travel", "since_seq": 0})
            for i, client in enumerate(clients):
                # Live events before the travel, then the travel's, then live again.
                while True:
                    message = await client.recv(10)
                    if message.get("status") == "travel_complete":
                        break
                    seen[i].append(message["data"]["seq"])
            await asyncio.sleep(0.3)
            stop.set()
            total = await producer
            for i, client in enumerate(clients):
                after = seqs(await client.recv_events(total - max(seen[i]), within=10))
                assert after == list(range(max(seen[i]) + 1, total + 1)), i
