"""Closing: SIGTERM (1001), dead peers (ping keepalive), slow consumers (4008)."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import time
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from tests.protocol._support import (
    RawWebSocket,
    client,
    event,
    metric,
    publish,
    seqs,
)
from tests.support.servers import running_server, server_process

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


async def wait_until(condition_name: str, check: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    assert callable(check)
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {condition_name}")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_sigterm_closes_clients_with_1001_and_exits_0(store: str, tmp_path: Path) -> None:
    args = ["--store", store, "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    with server_process(*args, log_path=tmp_path / "server.log") as proc:
        async with client(proc.ws, "a") as c1, client(proc.ws, "b") as c2:
            async with aiohttp.ClientSession() as http:
                response = await http.post(
                    proc.base + "/events", json={"organization_id": "a", "payload": 1}
                )
                assert response.status == 201
            [got] = await c1.recv_events(1)
            assert got["data"]["seq"] == 1
            assert proc.proc is not None
            started = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            for c in (c1, c2):
                with pytest.raises(ConnectionClosed) as closed:
                    await c.recv(within=10)
                assert closed.value.rcvd is not None, "expected a close frame"
                assert closed.value.rcvd.code == 1001
                assert "since_seq" in closed.value.rcvd.reason
            code = await asyncio.to_thread(proc.proc.wait, 20)
            assert code == 0, (tmp_path / "server.log").read_text()
            assert time.monotonic() - started < 8


async def test_dead_peer_is_dropped_by_ping_keepalive() -> None:
    async with running_server(store="memory", ping_interval=0.5, ping_timeout=1.0) as srv:
        dead = await RawWebSocket.connect(srv.port, "a")
        try:
            opcode, hello = await dead.read_frame()
            assert opcode == OP_TEXT and json.loads(hello)["status"] == "subscribed"
            assert len(srv.hub.connections) == 1
            started = time.monotonic()
            # Never read, never answer: the server must give up on it by itself.
            await wait_until("the server to drop the peer", lambda: not srv.hub.connections)
            assert time.monotonic() - started < 4
            assert await metric(srv, "athena_cdc_open_connections") == 0
            # What is left to read ends with the socket closed (pings and maybe a close).
            with pytest.raises(EOFError):
                for _ in range(100):
                    opcode, _ = await asyncio.wait_for(dead.read_frame(), 5)
                    assert opcode in (OP_PING, OP_CLOSE)
        finally:
            dead.close()


async def test_live_peer_answering_pings_stays_connected() -> None:
    async with running_server(store="memory", ping_interval=0.3) as srv, client(srv) as c:
        await asyncio.sleep(1.5)
        await publish(srv, event("a", "still"))
        [got] = await c.recv_events(1)
        assert got["data"]["payload"] == "still"


async def test_raw_peer_answering_pings_stays_connected() -> None:
    async with running_server(store="memory", ping_interval=0.3) as srv:
        raw = await RawWebSocket.connect(srv.port, "a")
        try:
            await raw.read_frame()
            pings = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                try:
                    opcode, payload = await asyncio.wait_for(raw.read_frame(), 0.2)
                except TimeoutError:
                    continue
                assert opcode == OP_PING
                pings += 1
                await raw.send_frame(OP_PONG, payload)
            assert pings >= 2
            assert len(srv.hub.connections) == 1
        finally:
            raw.close()


async def test_slow_consumer_is_closed_with_4008_and_others_get_everything() -> None:
    total, payload = 6_000, "x" * 2_000
    async with (
        running_server(store="memory", slow_consumer_limit=256 * 1024) as srv,
        client(srv, "flood") as good,
    ):
        slow = await RawWebSocket.connect(srv.port, "flood", rcvbuf=4096)
        try:
            opcode, hello = await slow.read_frame()
            assert json.loads(hello)["status"] == "subscribed"
            assert await metric(srv, "athena_cdc_slow_consumer_closes_total") == 0

            # The good client keeps up: each batch is read before the next is published.
            good_seqs: list[int] = []
            async with aiohttp.ClientSession() as http:
                for _ in range(total // 50):
                    await publish(srv, [event("flood", payload)] * 50, session=http)
                    good_seqs += seqs(await good.recv_events(50))
            assert good_seqs == list(range(1, total + 1))

            async def slow_closed() -> bool:
                return await metric(srv, "athena_cdc_slow_consumer_closes_total") == 1

            await wait_until("the slow consumer to be closed", slow_closed)
            # Now read what reached the slow client: a gap-free prefix, then the 4008 close.
            received: list[int] = []
            while True:
                opcode, data = await asyncio.wait_for(slow.read_frame(), 5)
                if opcode != OP_TEXT:
                    break
                received.append(json.loads(data)["data"]["seq"])
            assert opcode == OP_CLOSE
            (code,) = struct.unpack("!H", data[:2])
            reason = data[2:].decode()
            assert code == 4008
            assert "since_seq" in reason and "travel" in reason
            assert received == list(range(1, len(received) + 1))
            assert len(received) < total
            assert len(srv.hub.connections) == 1, "only the slow client goes"
            # The good client is still served.
            await publish(srv, event("flood", "after"))
            [after] = await good.recv_events(1)
            assert after["data"]["seq"] == total + 1
            # The slow client can resume from the log with since_seq.
            async with client(srv, "flood") as again:
                resume_from = received[-1] if received else 0
                events, _ = await again.travel(since_seq=resume_from, limit=50_000)
                assert seqs(events) == list(range(resume_from + 1, total + 2))
        finally:
            slow.close()


async def test_slow_consumer_during_a_travel_is_closed_with_4008() -> None:
    """A client that does not read a large travel reply is closed, not buffered forever."""
    async with running_server(store="memory", slow_consumer_limit=64 * 1024) as srv:
        await publish(srv, [event("t", "y" * 1_000) for _ in range(5_000)])
        slow = await RawWebSocket.connect(srv.port, "t", rcvbuf=4096)
        try:
            await slow.read_frame()
            await slow.send_frame(OP_TEXT, b'{"type":"travel","since_seq":0}')
            await asyncio.sleep(0.3)
            # Live events pile up behind the travel while the client reads nothing.
            async with aiohttp.ClientSession() as http:
                for _ in range(20):
                    await publish(srv, [event("t", "z" * 1_000)] * 100, session=http)

            async def closed() -> bool:
                return await metric(srv, "athena_cdc_slow_consumer_closes_total") == 1

            await wait_until("the slow consumer to be closed", closed)
            await wait_until("the connection to go", lambda: not srv.hub.connections, 10)
        finally:
            slow.close()
