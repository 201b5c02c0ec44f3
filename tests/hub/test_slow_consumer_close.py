"""The 4008 close reaches a slow consumer that still reads; only a silent one is dropped.

Real sockets with a small receive buffer: a client reading at a few hundred KB/s is
still far behind when the server closes it, with megabytes buffered for it. It must
receive every frame whole, then the close frame with 4008 and the documented reason;
a client that reads nothing is aborted after the grace and the server keeps nothing
of it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import orjson
import pytest

from athena_cdc.hub import connection
from athena_cdc.hub.connection import Connection
from athena_cdc.protocol.close_codes import SLOW_CONSUMER_REASON
from athena_cdc.server.app import AthenaServer
from tests.protocol._support import RawWebSocket, event, publish
from tests.support.servers import running_server

OP_TEXT, OP_CLOSE = 0x1, 0x8
PAD = "p" * 1000  # events of about 1.1 KB


class FrameReader:
    """Server frames parsed as bytes arrive; ``rest`` is a frame not (yet) complete."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.rest = b""

    def feed(self, data: bytes) -> None:
        buf, at = self.rest + data, 0
        while len(buf) - at >= 2:
            length, header = buf[at + 1] & 0x7F, 2
            if length == 126:
                length, header = (
                    (struct.unpack_from("!H", buf, at + 2)[0], 4)
                    if len(buf) - at >= 4
                    else (1 << 62, 4)
                )
            elif length == 127:
                length, header = (
                    (struct.unpack_from("!Q", buf, at + 2)[0], 10)
                    if len(buf) - at >= 10
                    else (1 << 62, 10)
                )
            if len(buf) - at < header + length:
                break
            self.frames.append((buf[at] & 0x0F, buf[at + header : at + header + length]))
            at += header + length
        self.rest = buf[at:]

    @property
    def closed(self) -> bool:
        return bool(self.frames) and self.frames[-1][0] == OP_CLOSE


async def read_slowly(ws: RawWebSocket, rate: float) -> FrameReader:
    """Read at about ``rate`` bytes/s until a close frame, EOF or a reset."""
    loop = asyncio.get_running_loop()
    reader = FrameReader()
    reader.feed(bytes(ws.buffer))
    received, started = 0, time.monotonic()
    while not reader.closed:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(ws.sock, 8192), 30)
        except ConnectionResetError:
            break
        if not chunk:
            break
        reader.feed(chunk)
        received += len(chunk)
        ahead = received / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    return reader


def small_send_buffer(server: AthenaServer) -> Connection:
    """The server side of the only connection, its kernel send buffer made small: on
    loopback the kernel would otherwise take megabytes, and the point is what the
    server itself still holds when it closes (as it does on a real, slower link)."""
    (conn,) = server.hub.connections
    sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    return conn


async def until_dropped(conn: Connection, within: float = 5.0) -> None:
    """Until nothing is buffered for ``conn`` any more (drained or aborted)."""
    for _ in range(int(within / 0.02)):
        if not conn._transport.get_write_buffer_size():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {conn._transport.get_write_buffer_size()} bytes buffered")


async def wait_for_close(server: AthenaServer, count: int = 1) -> None:
    for _ in range(200):
        if server.metrics.slow_consumer_closes._value.get() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no slow-consumer close")


async def test_a_slow_reader_gets_every_frame_whole_then_the_4008_close() -> None:
    async with running_server(store="memory", slow_consumer_limit=256 * 1024) as server:
        slow = await RawWebSocket.connect(server.port, "flood", rcvbuf=16 * 1024)
        try:
            opcode, _ = await slow.read_frame()  # subscribed
            assert opcode == OP_TEXT
            small_send_buffer(server)
            # 3 MB in one batch: one write, most of which waits in the server's
            # transport for a client that reads 500 KB/s (six seconds of reading).
            await publish(server, [event("flood", {"pad": PAD, "i": i}) for i in range(2700)])
            for _ in range(6):  # the backlog passes the limit: 4008
                await publish(server, [event("flood", {"pad": PAD}) for _ in range(100)])
            await wait_for_close(server)
            reader = await read_slowly(slow, rate=500 * 1024)
        finally:
            slow.close()
        assert reader.closed, f"no close frame; {len(reader.rest)} bytes of a partial frame"
        assert reader.rest == b""
        *events, (_, close) = reader.frames
        assert struct.unpack("!H", close[:2])[0] == 4008
        assert close[2:].decode() == SLOW_CONSUMER_REASON
        seqs = [orjson.loads(payload)["data"]["seq"] for _, payload in events]
        assert seqs == list(range(1, len(seqs) + 1))  # a gap-free prefix
        assert len(seqs) >= 2700  # the whole first batch, buffered when it was closed


async def test_a_client_that_reads_nothing_is_dropped_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "CLOSE_GRACE_S", 1.0)
    async with running_server(store="memory", slow_consumer_limit=256 * 1024) as server:
        stuck = await RawWebSocket.connect(server.port, "stuck", rcvbuf=16 * 1024)
        try:
            conn = small_send_buffer(server)
            await publish(server, [event("stuck", {"pad": PAD}) for _ in range(2000)])
            await publish(server, [event("stuck", {"pad": PAD}) for _ in range(400)])
            await wait_for_close(server)
            closed_at = time.monotonic()
            transport = conn._transport
            assert transport.get_write_buffer_size() > 0  # the grace has begun
            await until_dropped(conn)
            waited = time.monotonic() - closed_at
            assert 0.8 <= waited <= 4.0, waited  # dropped after the grace, not before
            # Nothing of it is left: its buffered bytes went with the aborted socket.
            assert transport.is_closing() and transport.get_write_buffer_size() == 0
            assert conn._pending_bytes == 0 and conn._held is None
            assert not server.hub.connections
            with pytest.raises((EOFError, ConnectionResetError)):
                while True:  # what the kernel had, then the reset: no close frame
                    await stuck.read_frame()
        finally:
            stuck.close()


async def test_a_reader_that_stops_reading_while_closing_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "CLOSE_GRACE_S", 1.0)
    async with running_server(store="memory", slow_consumer_limit=256 * 1024) as server:
        slow = await RawWebSocket.connect(server.port, "halting", rcvbuf=16 * 1024)
        try:
            halting = small_send_buffer(server)
            await publish(server, [event("halting", {"pad": PAD}) for _ in range(2700)])
            await publish(server, [event("halting", {"pad": PAD}) for _ in range(400)])
            await wait_for_close(server)
            loop = asyncio.get_running_loop()
            for _ in range(20):  # reads a little, then stops for good
                await loop.sock_recv(slow.sock, 8192)
            # Megabytes are still buffered (a grace of most of a minute), but it has
            # stopped reading: it goes once it has read nothing for CLOSE_GRACE_S.
            stopped_at = time.monotonic()
            await until_dropped(halting)
            assert time.monotonic() - stopped_at <= 4.0
        finally:
            slow.close()


def test_the_grace_grows_with_what_is_buffered_and_is_capped() -> None:
    assert connection.close_grace(0) == connection.CLOSE_GRACE_S
    assert connection.close_grace(640 * 1024) == pytest.approx(connection.CLOSE_GRACE_S + 10)
    assert connection.close_grace(1 << 40) == connection.CLOSE_GRACE_MAX_S
