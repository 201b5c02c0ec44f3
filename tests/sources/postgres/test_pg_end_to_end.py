"""The server with a PostgreSQL source, killed with SIGKILL mid-stream: nothing lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from tests.support.servers import ServerProcess

from .conftest import Db

COMMITS = 1000


def wait_ready(server: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(server.base + "/ready", timeout=1) as response,
        ):
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError("server never became ready")
        time.sleep(0.05)


async def travel_all(server: ServerProcess, channel: str) -> list[dict[str, Any]]:
    """Every event of ``channel`` via a WebSocket travel, oldest first.

    The reader is not subscribed to ``channel`` (its own channel is another), so no live
    event of it can arrive before the travel's reply.
    """
    reader = f"travel-reader-of-{channel}"
    async with connect(server.ws, additional_headers={"X-Athena-Client": reader}) as ws:
        assert orjson.loads(await ws.recv())["status"] == "subscribed"
        await ws.send(orjson.dumps({"type": "travel", "organization_id": channel,
                                    "since_seq": 0, "limit": 50_000}).decode())
        events: list[dict[str, Any]] = []
        while True:
            message = orjson.loads(await ws.recv())
            if message.get("status") == "travel_complete":
                assert not message["has_more"]
                return events
            events.append(message["data"])


async def test_sigkill_while_commits_stream_in(db: Db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, organization_id text)")
    db.sql("ALTER TABLE items REPLICA IDENTITY FULL")  # routable deletes
    args = ["--source", db.dsn, "--pg-slot", db.slot, "--store", "sqlite",
            "--data-dir", str(tmp_path / "data")]
    committed = 0

    def write() -> None:
        nonlocal committed
        conn = db.cluster.connect(db.name)
        with conn.cursor() as cur:
            for i in range(COMMITS):
                cur.execute("INSERT INTO items VALUES (%s, 'acme')", (i,))
                committed = i + 1
                time.sleep(0.001)
        conn.close()

    first = ServerProcess(args, log_path=tmp_path / "server1.log")
    with first:
        wait_ready(first)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while committed < COMMITS // 3:  # noqa: ASYNC110 - a counter bumped by a thread
            await asyncio.sleep(0.005)
        first.kill()  # SIGKILL: no draining, no final feedback
    second = ServerProcess(args, log_path=tmp_path / "server2.log")
    with second:
        wait_ready(second)
        await asyncio.to_thread(writer.join)
        deadline = time.monotonic() + 30
        while True:
            events = await travel_all(second, "acme")
            if len(events) >= COMMITS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    ids = [event["payload"]["new"]["id"] for event in events]
    assert ids == list(range(COMMITS))  # each row once, in commit order
    assert [event["seq"] for event in events] == list(range(1, COMMITS + 1))
