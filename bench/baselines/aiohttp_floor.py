"""Baseline ``aiohttp``: the floor of athena-cdc's own stack, doing only the protocol subset.

Same libraries as athena-cdc (aiohttp, uvloop, orjson) and the same fan-out tricks (each
event framed once, written straight to every subscriber's transport), but none of the
server around them: no validation beyond what the subset needs, no durable log (a list
per channel), no hub, no slow-consumer policy, no limits, no auth, no metrics. Against
this baseline, what athena-cdc costs above it is the cost of being a server one can put
on the internet; what this costs is the cost of Python, aiohttp and the kernel.

Protocol subset (as the Node and uWebSockets.js baselines): GET /ws with
X-Athena-Client -> ``subscribed``; POST /events (one event or an array) -> 201 with the
acks; the WebSocket ``publish`` message -> ``published`` (as athena-cdc's, so the
tenants scenario can run it ``+ws``); ``travel`` replays the in-memory list.

Usage: python aiohttp_floor.py --port P [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvloop
from aiohttp import WSMsgType, web

from athena_cdc.protocol.frames import text_frame

MAX_LOG = 100_000


class Channel:
    __slots__ = ("last_ts", "log", "seq", "subscribers")

    def __init__(self) -> None:
        self.seq = 0
        self.last_ts = 0
        self.log: list[tuple[int, bytes]] = []
        self.subscribers: list[Any] = []  # transports


channels: dict[str, Channel] = {}


def channel(name: str) -> Channel:
    found = channels.get(name)
    if found is None:
        found = channels[name] = Channel()
    return found


def publish(items: Any) -> bytes | None:
    """Append and fan out; the acks as JSON, or None for a body that is not events."""
    events = items if isinstance(items, list) else [items]
    for item in events:
        if not isinstance(item, dict) or not isinstance(item.get("organization_id"), str):
            return None
        if "payload" not in item:
            return None
    acks = []
    for item in events:
        name = item["organization_id"]
        ch = channel(name)
        ch.last_ts = ts = max(time.time_ns() // 1_000_000, ch.last_ts)
        ch.seq = seq = ch.seq + 1
        name_json = orjson.dumps(name)
        frame = text_frame(
            b'{"organization_id":%b,"data":{"seq":%d,"ts_ms":%d,"payload":%b}}'
            % (name_json, seq, ts, orjson.dumps(item["payload"]))
        )
        ch.log.append((seq, frame))
        if len(ch.log) > MAX_LOG:
            del ch.log[0]
        for transport in ch.subscribers:
            transport.write(frame)
        acks.append(b'{"organization_id":%b,"seq":%d,"ts_ms":%d}' % (name_json, seq, ts))
    return b",".join(acks)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def post_events(request: web.Request) -> web.Response:
    try:
        acks = publish(orjson.loads(await request.read()))
    except orjson.JSONDecodeError:
        acks = None
    if acks is None:
        return web.Response(
            status=400, body=b'{"error":"invalid_event"}', content_type="application/json"
        )
    return web.Response(
        status=201, body=b'{"events":[%b]}' % acks, content_type="application/json"
    )


def travel(name: str, message: dict[str, Any]) -> list[bytes]:
    org = message.get("organization_id")
    org = org if isinstance(org, str) else name
    limit = message.get("limit")
    limit = min(limit if isinstance(limit, int) else 10_000, 50_000)
    log = channels[org].log if org in channels else []
    since = message.get("since_seq")
    if isinstance(since, int):
        picked = [frame for seq, frame in log if seq > since][:limit]
    else:
        picked = [frame for _, frame in log[-limit:]]
    done = orjson.dumps(
        {
            "status": "travel_complete",
            "organization_id": message.get("organization_id"),
            "since_seq": since,
            "since_ts_ms": message.get("since_ts_ms"),
            "limit": limit,
            "count": len(picked),
        }
    )
    return [*picked, text_frame(done)]


async def websocket(request: web.Request) -> web.StreamResponse:
    name = request.headers.get("X-Athena-Client", "").strip()
    if not name:
        return web.Response(status=400, text="X-Athena-Client required")
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024)
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    subscribers = channel(name).subscribers
    subscribers.append(transport)
    transport.write(text_frame(b'{"status":"subscribed","client_id":%b}' % orjson.dumps(name)))
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                message = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "publish":
                acks = publish(message.get("events"))
                answer = (
                    b'{"status":"published","id":%b,"events":[%b]}'
                    % (orjson.dumps(message.get("id")), acks)
                    if acks is not None
                    else b'{"status":"error","error":"invalid_event"}'
                )
                transport.write(text_frame(answer))
            elif kind == "travel":
                transport.write(b"".join(travel(name, message)))
    finally:
        subscribers.remove(transport)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4055)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/events", post_events)
    uvloop.install()
    # A baseline holds nothing worth draining: stop at once on SIGTERM.
    web.run_app(
        app, host=args.host, port=args.port, access_log=None, print=None, backlog=4096,
        shutdown_timeout=0.5,
    )


if __name__ == "__main__":
    main()
