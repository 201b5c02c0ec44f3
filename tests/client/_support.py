"""Helpers for the client tests: fast backoff, reading items, publishing to any server."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from athena_cdc.client import Backoff, Client, Event, Item, publish
from athena_cdc.client.publish import PublishError

# Tests restart servers in well under a second: reconnect quickly.
FAST = Backoff(initial=0.05, maximum=0.5)


async def take(client: Client, count: int, within: float = 30.0) -> list[Item]:
    """The next ``count`` items."""
    items: list[Item] = []
    async with asyncio.timeout(within):
        while len(items) < count:
            items.append(await anext(client))
    return items


async def take_until(
    client: Client, done: Callable[[list[Item]], bool], within: float = 30.0
) -> list[Item]:
    """Items until ``done(items)`` holds."""
    items: list[Item] = []
    async with asyncio.timeout(within):
        while not done(items):
            items.append(await anext(client))
    return items


def event_seqs(items: Sequence[Item], channel: str | None = None) -> list[int]:
    return [i.seq for i in items if isinstance(i, Event) and channel in (None, i.channel)]


def upto(channel: str, seq: int) -> Callable[[list[Item]], bool]:
    """``take_until`` condition: ``channel`` has reached ``seq``."""

    def done(items: list[Item]) -> bool:
        return any(
            isinstance(i, Event) and i.channel == channel and i.seq >= seq for i in items[-1:]
        )

    return done


def publish_retrying(
    url: str, channel: str, payloads: list[Any], within: float = 30.0
) -> list[int]:
    """Publish (blocking), retrying while the server is down; the seqs appended."""
    import time

    deadline = time.monotonic() + within
    while True:
        try:
            return [p.seq for p in publish(url, [(channel, x) for x in payloads], timeout=5)]
        except PublishError as exc:
            if (exc.status is not None and exc.status < 500) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def newest_seq(base_url: str, channel: str) -> int:
    """The channel's newest seq, read with one travel (limit 1) over a plain WebSocket."""
    from websockets.sync.client import connect

    ws_url = base_url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers={"X-Athena-Client": "probe"}) as ws:
        ws.recv(10)
        ws.send(json.dumps({"type": "travel", "organization_id": channel, "limit": 1}))
        newest = 0
        while True:
            message = json.loads(ws.recv(10))
            if message.get("status") == "travel_complete":
                return newest
            newest = message["data"]["seq"]


def health(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
        status: int = response.status
        return status
