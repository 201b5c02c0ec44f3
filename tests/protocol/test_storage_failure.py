"""A log that cannot answer gets an `unavailable` error; the connection stays open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import websockets
from aiohttp import ClientSession

from athena_cdc.log.sqlite import SqliteLog
from tests.support.servers import http_url, running_server, ws_url


async def test_travel_that_the_disk_cannot_answer_is_unavailable(tmp_path: Path) -> None:
    # A 2 KiB cache holds almost nothing, so this travel must read the disk.
    async with running_server(store="sqlite", data_dir=str(tmp_path), memory_limit=2048) as server:
        async with ClientSession() as http:
            body = [{"organization_id": "d", "payload": {"i": i}} for i in range(100)]
            response = await http.post(http_url(server, "/events"), json=body)
            assert response.status == 201
        assert isinstance(server.log, SqliteLog)
        side = sqlite3.connect(server.log.path)
        side.execute("ALTER TABLE events RENAME TO events_elsewhere")  # reads now fail
        side.commit()
        async with websockets.connect(
            ws_url(server), additional_headers={"X-Athena-Client": "d"}
        ) as ws:
            await ws.recv()  # subscribed
            await ws.send('{"type":"travel","since_seq":0}')
            error = orjson.loads(await ws.recv())
            assert (error["status"], error["error"]) == ("error", "unavailable")
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await ws.recv()) == {"status": "pong"}
        side.execute("ALTER TABLE events_elsewhere RENAME TO events")
        side.commit()
        side.close()


async def _publish_over_ws(server: object, events: list[dict[str, object]]) -> dict[str, object]:
    async with websockets.connect(
        ws_url(server),  # type: ignore[arg-type]
        additional_headers={"X-Athena-Client": "producer"},
    ) as ws:
        await ws.recv()  # subscribed
        await ws.send(orjson.dumps({"type": "publish", "id": 1, "events": events}).decode())
        answer: dict[str, object] = orjson.loads(await ws.recv())
        await ws.send('{"type":"ping"}')  # the connection goes on
        assert orjson.loads(await ws.recv()) == {"status": "pong"}
        return answer


async def test_a_websocket_publish_the_sqlite_log_cannot_write_is_answered_unavailable(
    tmp_path: Path,
) -> None:
    async with running_server(store="sqlite", data_dir=str(tmp_path)) as server:
        assert isinstance(server.log, SqliteLog)
        side = sqlite3.connect(server.log.path)
        side.execute("ALTER TABLE events RENAME TO events_elsewhere")  # writes now fail
        side.commit()
        answer = await _publish_over_ws(server, [{"organization_id": "w", "payload": 1}])
        assert (answer["status"], answer["id"], answer["error"]) == ("error", 1, "unavailable")
        side.execute("ALTER TABLE events_elsewhere RENAME TO events")
        side.commit()
        side.close()
        answer = await _publish_over_ws(server, [{"organization_id": "w", "payload": 2}])
        assert answer["status"] == "published"


async def test_a_websocket_publish_the_memory_log_has_no_room_for_is_answered_unavailable() -> None:
    # Remembering 200 new channels' counters (~200 bytes each) passes half of 32 KiB.
    async with running_server(store="memory", memory_limit=32 * 1024) as server:
        many = [{"organization_id": f"c{i}", "payload": i} for i in range(200)]
        answer = await _publish_over_ws(server, many)
        assert (answer["status"], answer["id"], answer["error"]) == ("error", 1, "unavailable")
        assert "--memory-limit" in str(answer["message"])
        answer = await _publish_over_ws(server, many[:1])
        assert answer["status"] == "published"
