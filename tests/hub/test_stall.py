"""One request never stalls the others: a huge travel leaves live latency alone.

The server runs in its own process, so the clients measuring it do not share its event
loop. A probe event is published on a fixed schedule (every ``PERIOD_S``) and its
latency is measured from the *scheduled* time to its arrival at a subscriber: if the
server stalls, the probes it could not accept meanwhile count as late too (a publisher
that waited for each answer would otherwise hide the stall behind a single slow probe).

Each round measures a baseline window without a travel, then the window of a travel
over 10,000 channels (limit 50,000); the test passes when the p99 latency of the
quietest travel window is at most ``ALLOWED_P99_INCREASE_S`` above that of the
quietest baseline window. Several rounds make it robust on a noisy machine; an
unsliced travel stalls the loop for about a second every round.

A second test measures the same property from inside an in-process server, where
noise cannot reach it: the CPU time of each event-loop step during a travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.protocol._support import RawWebSocket, masked_frame
from tests.support.servers import ServerProcess, running_server

CHANNELS = 10_000
EVENTS_PER_CHANNEL = 20
TRAVEL_LIMIT = 50_000
PERIOD_S = 0.005
BASELINE_S = 1.5
ROUNDS = 6
# A guard against stalls, not a benchmark: an unsliced travel adds about a second to the
# p99 of every round; 20 ms leaves room for a shared CI machine's noise (baseline p99s of
# 9-28 ms were seen there) while catching any stall 50x shorter than that. The fine
# figure is the in-process loop-step test below and docs/performance.md.
ALLOWED_P99_INCREASE_S = 0.020
OP_TEXT = 0x1


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def channel_names(count: int) -> list[str]:
    return [f"c{number:05d}" for number in range(count)]


async def fill(
    session: aiohttp.ClientSession,
    base: str,
    channels: list[str],
    per_channel: int = EVENTS_PER_CHANNEL,
) -> None:
    """``per_channel`` events in each of ``channels``, 10,000 per request."""
    events = [
        {"organization_id": channel, "payload": {"n": n}}
        for n in range(per_channel)
        for channel in channels
    ]
    for start in range(0, len(events), 10_000):
        body = orjson.dumps(events[start : start + 10_000])
        headers = {"Content-Type": "application/json"}
        async with session.post(base + "/events", data=body, headers=headers) as response:
            assert response.status == 201, await response.text()



@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> str:
    """These budgets are for the in-process stores; the Redis store's travel reads go
    over the network and its fill of 10,000 channels alone outlasts a ping interval
    (docs/scaling.md has its numbers)."""
    value: str = request.param
    return value

class Traveller:
    """A raw client subscribed to every channel; it reads replies as fast as it can
    without decoding them (decoding 50,000 events would load the test's own loop)."""

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws

    async def _read_until(self, marker: bytes, count: int = 1) -> bytes:
        loop = asyncio.get_running_loop()
        seen, data = 0, bytearray()
        tail = b""
        while seen < count:
            chunk = await asyncio.wait_for(loop.sock_recv(self.ws.sock, 1 << 20), 60)
            if not chunk:
                raise EOFError("server closed the travelling client")
            window = tail + chunk
            seen += window.count(marker) - tail.count(marker)
            tail = window[-200:]
            data += chunk
        return bytes(data)

    async def subscribe_all(self, channels: list[str]) -> None:
        frames = b"".join(
            masked_frame(OP_TEXT, orjson.dumps({"type": "subscribe", "organization_id": channel}))
            for channel in channels
        )
        await asyncio.get_running_loop().sock_sendall(self.ws.sock, frames)
        await self._read_until(b'"status":"subscribed"', len(channels))

    async def travel(self, **fields: object) -> dict[str, object]:
        request = orjson.dumps({"type": "travel", "limit": TRAVEL_LIMIT, **fields})
        await self.ws.send_frame(OP_TEXT, request)
        data = await self._read_until(b'"status":"travel_complete"')
        start = data.rindex(b'{"status":"travel_complete"')
        ack: dict[str, object] = orjson.loads(data[start:].split(b"\x81", 1)[0])
        return ack


class Probe:
    """Publishes probe events on a fixed schedule and times their arrival."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.scheduled: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self._next = 0

    async def receive(self, port: int) -> None:
        probe = await RawWebSocket.connect(port, "probe")
        try:
            await probe.read_frame()  # subscribed
            while True:
                _, message = await probe.read_frame()
                number = orjson.loads(message)["data"]["payload"]
                self.latency[number] = time.perf_counter() - self.scheduled[number]
        finally:
            probe.close()

    async def publish_while(self, running: asyncio.Future[Any]) -> tuple[int, int]:
        """Publish every ``PERIOD_S`` until ``running`` is done; the probes' range.

        Open loop: each probe is posted at its time whether or not the previous ones
        were answered, as independent producers would."""
        first = self._next
        start = time.perf_counter()
        posts: set[asyncio.Task[None]] = set()
        tick = 0
        while not running.done():
            at = start + tick * PERIOD_S
            tick += 1
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.wait([running], timeout=delay)
            number = self._next
            self._next += 1
            self.scheduled[number] = at
            posts.add(asyncio.create_task(self._post(number)))
        await asyncio.gather(*posts)
        return first, self._next

    async def _post(self, number: int) -> None:
        body = orjson.dumps({"organization_id": "probe", "payload": number})
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.base + "/events", data=body, headers=headers) as r:
            assert r.status == 201

    async def latencies(self, numbers: tuple[int, int]) -> list[float]:
        """The latencies of probes ``numbers`` (waiting for the last to arrive)."""
        for _ in range(200):
            if all(n in self.latency for n in range(*numbers)):
                break
            await asyncio.sleep(0.05)
        return [self.latency[n] for n in range(*numbers)]


@contextlib.asynccontextmanager
async def stall_rig(store: str, tmp_path: Path) -> AsyncIterator[tuple[Traveller, Probe]]:
    args = ["--store", store, "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    args += ["--max-subscriptions", str(CHANNELS + 10), "--client-rate-limit", "none"]
    args += ["--ping-interval", "10m"]  # the raw clients here do not answer pings
    with ServerProcess(args) as server:
        async with aiohttp.ClientSession() as session:
            await fill(session, server.base, channel_names(CHANNELS))
            ws = await RawWebSocket.connect(server.port, "traveller")
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            traveller = Traveller(ws)
            await traveller.subscribe_all(channel_names(CHANNELS))
            probe = Probe(session, server.base)
            receiver = asyncio.create_task(probe.receive(server.port))
            try:
                await asyncio.sleep(0.5)  # the probe client is connected and subscribed
                yield traveller, probe
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
                ws.close()


async def measure_round(traveller: Traveller, probe: Probe) -> tuple[float, float, int]:
    """p99 of a baseline window and of a travel's window; and the travel's count."""
    baseline = asyncio.get_running_loop().create_task(asyncio.sleep(BASELINE_S))
    base_range = await probe.publish_while(baseline)
    travel = asyncio.get_running_loop().create_task(traveller.travel())
    travel_range = await probe.publish_while(travel)
    ack = travel.result()
    count = ack["count"]
    assert isinstance(count, int)
    base = await probe.latencies(base_range)
    during = await probe.latencies(travel_range)
    base_p99 = p99(base)
    travel_p99 = p99(during)
    return base_p99, travel_p99, count


@pytest.mark.timeout(180)
async def test_a_travel_over_ten_thousand_channels_does_not_stall_live_delivery(
    store: str, tmp_path: Path
) -> None:
    async with stall_rig(store, tmp_path) as (traveller, probe):
        rounds: list[tuple[float, float]] = []
        for number in range(ROUNDS):
            base_p99, travel_p99, count = await measure_round(traveller, probe)
            assert count == TRAVEL_LIMIT
            rounds.append((base_p99, travel_p99))
            if number >= 1 and best_increase(rounds) <= ALLOWED_P99_INCREASE_S:
                break
        shown = ", ".join(f"{b * 1000:.1f} → {t * 1000:.1f} ms" for b, t in rounds)
        assert best_increase(rounds) <= ALLOWED_P99_INCREASE_S, (
            f"p99 live latency, baseline → travel: {shown}"
        )


def best_increase(rounds: list[tuple[float, float]]) -> float:
    """The quietest travel window against the quietest baseline: noise (another
    process taking the CPU) only ever adds latency, so the minimum of each is the
    closest to what the server itself does; a noisy baseline cannot excuse a stall."""
    return min(t for _, t in rounds) - min(b for b, _ in rounds)


# -- no step of the loop computes for long -------------------------------------------
#
# The same property measured from inside, where the machine's noise cannot reach it:
# the CPU time of each step the event loop runs (a task step, an I/O callback) while a
# travel is answered. Wall-clock gaps would include other processes taking the CPU;
# a step's CPU time is the server's own work. Unsliced, reading 50,000 events of one
# channel is a single step of tens of milliseconds.

MAX_STEP_CPU_S = 0.012


@contextlib.contextmanager
def loop_step_cpu_times(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    steps: list[float] = []
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        run(handle)
        steps.append(time.thread_time() - started)

    monkeypatch.setattr(asyncio.events.Handle, "_run", timed)
    try:
        yield steps
    finally:
        monkeypatch.setattr(asyncio.events.Handle, "_run", run)


@pytest.mark.parametrize("channels", [1, 2_000])
async def test_a_50000_event_travel_runs_in_short_steps(
    store: str, tmp_path: Path, channels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = channel_names(channels)
    settings = {
        "store": store,
        "data_dir": str(tmp_path / "data"),
        "max_subscriptions": channels + 1,
        "client_rate_limit": None,  # it subscribes to 2,000 channels at once
    }
    async with running_server(**settings) as server, aiohttp.ClientSession() as session:
        await fill(session, f"http://127.0.0.1:{server.port}", names, TRAVEL_LIMIT // channels)
        ws = await RawWebSocket.connect(server.port, "traveller")
        try:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            traveller = Traveller(ws)
            await traveller.subscribe_all(names)
            fields = {"organization_id": names[0]} if channels == 1 else {}
            with loop_step_cpu_times(monkeypatch) as steps:
                ack = await traveller.travel(**fields)
        finally:
            ws.close()
    assert ack["count"] == TRAVEL_LIMIT
    longest = sorted(steps)[-3:]
    assert longest[-1] <= MAX_STEP_CPU_S, f"longest loop steps (CPU): {longest}"


def test_collection_is_off_only_while_jobs_run_and_not_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from athena_cdc import slicing

    assert gc.isenabled()
    slicing.job_started()
    slicing.job_started()  # jobs overlap
    try:
        assert not gc.isenabled()
        collections = gc.get_stats()[2]["collections"]
        monkeypatch.setattr(slicing, "GC_OFF_MAX_S", 0.0)
        slicing.job_started()  # off too long: this one collects once
        slicing.job_done()
        assert gc.get_stats()[2]["collections"] == collections + 1
        slicing.job_done()
        assert not gc.isenabled()  # one job still runs
    finally:
        slicing.job_done()
    assert gc.isenabled()
