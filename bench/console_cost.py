"""What the console costs the server: CPU-seconds with and without a viewer.

    python -m bench.console_cost [--seconds 30] [--rate 500] [--channels 1000]

Runs ``athena-cdc serve`` (sqlite, in a temporary directory) as a subprocess with
``--channels`` channels made up front, and steady traffic from this process: ``--rate``
events/s published over HTTP to 100 hot channels, each delivered to
``--subscribers`` WebSocket clients. Then, for ``--seconds`` each, the server's
CPU-seconds (``/proc``, the process and its threads) with: no viewer; the console
open in headless Chromium on its Server view (``/api/stats`` each second), on its
Channels view (``/api/channels`` every 3 s), on a Channel view tailing the busiest
channel (a WebSocket client, ``/api/channel`` every 2 s); a phase without a viewer
before each of these and after the last, to compare with its neighbours. The
viewer is the real page (Playwright and the machine's Chromium; ``--chromium PATH``);
``--viewer api`` makes the page's requests from here instead, for machines without a
browser. Compare phases of one run: they share the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from athena_cdc.bench.procstat import cpu_seconds_precise

HOT_CHANNELS = 100
PUBLISH_TICK_S = 0.05


@dataclass
class Phase:
    name: str
    cpu_s: float
    published: int
    delivered: int
    seconds: float


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(data_dir: str) -> Any:
    port = _free_port()
    cmd = [sys.executable, "-m", "athena_cdc", "serve", "--port", str(port), "--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {cmd}") from None
                time.sleep(0.1)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


async def _make_channels(session: aiohttp.ClientSession, base: str, count: int) -> None:
    for start in range(0, count, 10_000):
        batch = [
            {"organization_id": f"tenant-{n:06}", "payload": {"n": n}}
            for n in range(start, min(count, start + 10_000))
        ]
        async with session.post(f"{base}/events", json=batch) as response:
            response.raise_for_status()


class Traffic:
    """Steady publishing to the hot channels, and subscribers reading all of it."""

    def __init__(self, session: aiohttp.ClientSession, base: str, rate: int) -> None:
        self.session = session
        self.base = base
        self.rate = rate
        self.published = 0
        self.delivered = 0

    async def publish_forever(self) -> None:
        per_tick = max(1, round(self.rate * PUBLISH_TICK_S))
        n = 0
        next_at = time.monotonic()
        while True:
            batch = []
            for _ in range(per_tick):
                batch.append({"organization_id": f"hot-{n % HOT_CHANNELS:03}", "payload": {"n": n}})
                n += 1
            async with self.session.post(f"{self.base}/events", json=batch) as response:
                response.raise_for_status()
            self.published += len(batch)
            next_at += PUBLISH_TICK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def subscribe_forever(self, index: int) -> None:
        url = self.base.replace("http://", "ws://") + f"/ws?client=hot-{index % HOT_CHANNELS:03}"
        async with self.session.ws_connect(url, max_msg_size=0) as ws:
            await ws.receive()  # subscribed
            await ws.send_bytes(orjson.dumps({"type": "subscribe", "organization_id": "hot-000"}))
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT and '"data"' in message.data:
                    self.delivered += 1


Viewer = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


def _browser_viewer(chromium: str) -> Viewer:
    @contextlib.asynccontextmanager
    async def view(url: str) -> AsyncIterator[None]:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, headless=True, args=["--no-sandbox"]
            )
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            await page.goto(url)
            try:
                yield
            finally:
                await browser.close()

    return view


def _api_viewer(session: aiohttp.ClientSession) -> Viewer:
    """The page's requests without a page: what each view polls, at its intervals."""

    @contextlib.asynccontextmanager
    async def view(url: str) -> AsyncIterator[None]:
        base, _, fragment = url.partition("/console#/")
        tasks: list[asyncio.Task[None]] = []

        def poll(path: str, every: float) -> None:
            async def loop() -> None:
                while True:
                    async with session.get(base + path) as response:
                        await response.read()
                    await asyncio.sleep(every)

            tasks.append(asyncio.create_task(loop()))

        if fragment == "server":
            poll("/api/stats", 1.0)
        elif fragment == "channels":
            poll("/api/channels?limit=50", 3.0)
        elif fragment.startswith("channel/"):
            name = fragment.split("/", 1)[1]
            poll(f"/api/channel?name={name}", 2.0)
            ws_url = base.replace("http://", "ws://") + f"/ws?client={name}"

            async def tail() -> None:
                async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                    async for _ in ws:
                        pass

            tasks.append(asyncio.create_task(tail()))
        elif fragment == "connections":
            poll("/api/connections?limit=100", 2.0)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return view


async def _measure(
    name: str, pid: int, traffic: Traffic, seconds: float, during: Callable[[], Awaitable[None]]
) -> Phase:
    await asyncio.sleep(1.0)  # let the viewer's first requests settle
    cpu0, pub0, del0, t0 = (
        cpu_seconds_precise(pid),
        traffic.published,
        traffic.delivered,
        time.monotonic(),
    )
    await during()
    return Phase(
        name,
        cpu_seconds_precise(pid) - cpu0,
        traffic.published - pub0,
        traffic.delivered - del0,
        time.monotonic() - t0,
    )


async def run(args: argparse.Namespace) -> list[Phase]:
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as data_dir, _server(data_dir) as (proc, base):
        async with aiohttp.ClientSession() as session:
            await _make_channels(session, base, args.channels)
            traffic = Traffic(session, base, args.rate)
            tasks = [asyncio.create_task(traffic.publish_forever())]
            tasks += [
                asyncio.create_task(traffic.subscribe_forever(i)) for i in range(args.subscribers)
            ]
            viewer = (
                _api_viewer(session) if args.viewer == "api" else _browser_viewer(args.chromium)
            )
            await asyncio.sleep(3.0)  # warm up

            async def idle() -> None:
                await asyncio.sleep(args.seconds)

            # A phase without a viewer before each one with: the baseline drifts (the
            # log grows, the machine's other load changes), so compare neighbours.
            for view in ("server", "channels", "channel/hot-000"):
                phases.append(await _measure("no viewer", proc.pid, traffic, args.seconds, idle))
                async with viewer(f"{base}/console#/{view}"):
                    phases.append(
                        await _measure(f"viewer: {view}", proc.pid, traffic, args.seconds, idle)
                    )
            phases.append(await _measure("no viewer", proc.pid, traffic, args.seconds, idle))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return phases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=500, help="events/s published")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--channels", type=int, default=1000, help="channels made up front")
    parser.add_argument("--viewer", choices=("browser", "api"), default="browser")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("ATHENA_CDC_CHROMIUM")
        or shutil.which("chromium")
        or "/usr/bin/chromium",
    )
    args = parser.parse_args(argv)
    phases = asyncio.run(run(args))
    print(
        f"{args.channels} channels, {args.rate} events/s to {HOT_CHANNELS} channels, "
        f"{args.subscribers} subscribers, {args.seconds:g} s per phase, viewer: {args.viewer}"
    )
    print(f"{'phase':<26} {'server CPU-s':>12} {'CPU %':>7} {'published':>10} {'delivered':>10}")
    for p in phases:
        print(
            f"{p.name:<26} {p.cpu_s:>12.2f} {100 * p.cpu_s / p.seconds:>6.1f}% "
            f"{p.published:>10} {p.delivered:>10}"
        )


if __name__ == "__main__":
    main()
