"""Baseline for the athena-cdc benchmarks: a naive Python ``websockets`` server.

Same protocol subset as athena-cdc: ``GET /ws`` with ``X-Athena-Client`` -> ``subscribed``;
``POST /events`` (one event or a JSON array) -> 201 ``{"events": [...]}``; events fanned
out as ``{"organization_id","data":{"seq","ts_ms","payload"}}``; ``travel`` replays the
in-memory log. Fan-out is the naive one: encode each event once, then
``await ws.send(text)`` per subscriber per event.

websockets' ``process_request`` cannot read a request body, so the HTTP side
(``POST /events``, ``/health``, ``/metrics``) is an aiohttp app on a second port served by
the *same* event loop in the *same* process: its CPU is counted with the WebSocket side,
as athena-cdc's is. Publishes go through one queue drained by one fan-out task, so every
subscriber sees events in seq order. Both listeners use uvloop, as athena-cdc does.

Usage: python naive_websockets.py --port P --http-port Q [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import time
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

Entry = tuple[int, int, str]  # seq, ts_ms, encoded event message


class Channel:
    def __init__(self) -> None:
        self.seq = 0
        self.last_ts = 0
        self.subscribers: set[ServerConnection] = set()
        self.log: list[Entry] = []


channels: dict[str, Channel] = {}
fanout_queue: asyncio.Queue[tuple[Channel, str]] = asyncio.Queue()


def channel(name: str) -> Channel:
    ch = channels.get(name)
    if ch is None:
        ch = channels[name] = Channel()
    return ch


async def fan_out() -> None:
    while True:
        ch, text = await fanout_queue.get()
        for ws in list(ch.subscribers):
            with contextlib.suppress(Exception):
                await ws.send(text)


async def travel(ws: ServerConnection, name: str, m: dict[str, Any]) -> None:
    org = m.get("organization_id") if isinstance(m.get("organization_id"), str) else name
    limit = min(m["limit"] if isinstance(m.get("limit"), int) else 10_000, 50_000)
    log = channels[org].log if org in channels else []
    since = m.get("since_seq")
    picked = [e for e in log if e[0] > since][:limit] if isinstance(since, int) else log[-limit:]
    for _, _, text in picked:
        await ws.send(text)
    await ws.send(json.dumps({
        "status": "travel_complete", "organization_id": m.get("organization_id"),
        "since_seq": since, "since_ts_ms": m.get("since_ts_ms"), "limit": limit,
        "count": len(picked),
    }))


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    name = (ws.request.headers.get("X-Athena-Client") or "").strip()
    ch = channel(name)
    ch.subscribers.add(ws)
    try:
        await ws.send(json.dumps({"status": "subscribed", "client_id": name,
                                  "message": "Subscribed via X-Athena-Client header"}))
        async for raw in ws:
            try:
                m = json.loads(raw)
            except ValueError:
                await ws.send('{"status":"error","error":"invalid_json","message":"not JSON"}')
                continue
            if isinstance(m, dict) and m.get("type") == "travel":
                await travel(ws, name, m)
            else:
                await ws.send('{"status":"error","error":"unknown_type","message":"travel only"}')
    finally:
        ch.subscribers.discard(ws)


def check_header(ws: ServerConnection, request: Any) -> Any:
    if not (request.headers.get("X-Athena-Client") or "").strip():
        body = '{"error":"Missing X-Athena-Client header","message":"missing","hint":"add it"}'
        response = ws.respond(400, body)
        response.headers["Content-Type"] = "application/json"
        return response
    return None


async def post_events(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": "invalid_json", "message": "not JSON"}, status=400)
    items = body if isinstance(body, list) else [body]
    if not all(isinstance(it, dict) and isinstance(it.get("organization_id"), str)
               and "payload" in it for it in items):
        return web.json_response({"error": "invalid_event", "message": "bad event"}, status=400)
    acks = []
    for it in items:
        org = it["organization_id"]
        ch = channel(org)
        ts = max(int(time.time() * 1000), ch.last_ts)
        ch.last_ts = ts
        ch.seq += 1
        text = json.dumps({"organization_id": org,
                           "data": {"seq": ch.seq, "ts_ms": ts, "payload": it["payload"]}})
        ch.log.append((ch.seq, ts, text))
        if len(ch.log) > 100_000:
            del ch.log[0]
        fanout_queue.put_nowait((ch, text))
        acks.append({"organization_id": org, "seq": ch.seq, "ts_ms": ts})
    return web.json_response({"events": acks}, status=201)


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(_: web.Request) -> web.Response:
    return web.Response(text="athena_cdc_slow_consumer_closes_total 0\n")


async def run(host: str, port: int, http_port: int) -> None:
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/events", post_events)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port, backlog=4096).start()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    fan = asyncio.create_task(fan_out())
    async with serve(handler, host, port, compression=None, process_request=check_header,
                     ping_interval=None, max_size=64 * 1024, backlog=4096):
        print(f"naive websockets baseline on {host}:{port} (http {http_port})", flush=True)
        await stop
    fan.cancel()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args.host, args.port, args.http_port))
    else:
        uvloop.run(run(args.host, args.port, args.http_port))


if __name__ == "__main__":
    main()
