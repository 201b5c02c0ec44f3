"""The load generator's side of the ``nats`` baseline: NATS's protocols, not athena-cdc's.

Clients use its WebSocket listener: ``CONNECT`` and ``SUB <channel>``, then ``MSG``
operations whose payloads are the same event messages (:class:`NatsSubscriber`, run in
the load generator's workers as ``protocol="bench.nats:NatsSubscriber"``).

The ``nats`` baseline has no ``POST /events``: :class:`NatsPublisher` publishes over NATS's
TCP protocol (``PUB`` per event, then ``PING``; the ``PONG`` means the server has handled
them, which stands for the 201), and since core NATS assigns no seq, it assigns seq and
ts itself, per channel, from counters shared by every publisher of the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import orjson
from picows import WSMsgType, WSTransport
from picows.picows import WSFrame

from athena_cdc.bench.loadgen import Subscriber, Totals
from athena_cdc.bench.publisher import HttpError

PROTOCOL = "bench.nats:NatsSubscriber"
_CLOSE = WSMsgType.CLOSE


class NatsSubscriber(Subscriber):
    """A client of the ``nats`` baseline: NATS's text protocol inside WebSocket frames.

    Subscribes to the subject named after its channel; a ``PONG`` to the ``PING`` sent
    after ``SUB`` means the server has the subscription (the ``subscribed`` of the
    athena-cdc protocol). Each ``MSG`` payload is an event message. Operations may span
    frames, so bytes are buffered until an operation is whole.
    """

    def __init__(self, totals: Totals, parse: bool, name: str = "") -> None:
        super().__init__(totals, parse, name)
        self._buffer = b""

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        transport.send(
            WSMsgType.BINARY,
            b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
            b"SUB " + self.name.encode() + b" 1\r\nPING\r\n",
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _CLOSE:
            super().on_ws_frame(transport, frame)
            return
        self.feed(transport, frame.get_payload_as_bytes(), time.time_ns())

    def feed(self, transport: WSTransport, chunk: bytes, now: int) -> None:
        """Handle the NATS operations that ``chunk`` completes."""
        data = self._buffer + chunk if self._buffer else chunk
        at, size = 0, len(data)
        while at < size:
            end = data.find(b"\r\n", at)
            if end < 0:
                break
            if data.startswith(b"MSG ", at):
                length = int(data[data.rfind(b" ", at, end) + 1 : end])
                start = end + 2
                if start + length + 2 > size:
                    break  # the payload is in a later frame
                self.on_event(data[start : start + length], now)
                at = start + length + 2
                continue
            if data.startswith(b"PING", at):
                transport.send(WSMsgType.BINARY, b"PONG\r\n")
            elif data.startswith(b"PONG", at) and not self.subscribed.done():
                self.subscribed.set_result(now)
            elif data.startswith(b"-ERR", at) and not self.subscribed.done():
                self.subscribed.set_exception(
                    ConnectionError(data[at:end].decode(errors="replace"))
                )
            at = end + 2
        self._buffer = data[at:]


class NatsPublisher:
    """One NATS client connection (TCP) that publishes events as the others' POSTs do."""

    def __init__(self, host: str, port: int, seqs: dict[str, int]) -> None:
        self.host = host
        self.port = port
        self._seqs = seqs  # channel -> last seq, shared by the run's publishers
        self._last_ts: dict[str, int] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=64 * 1024**2
        )
        await self._reader.readuntil(b"\r\n")  # INFO
        self._writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    async def publish(self, events: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        parts: list[bytes] = []
        acks: list[dict[str, object]] = []
        now = time.time_ns() // 1_000_000
        for event in events:
            channel = str(event["organization_id"])
            seq = self._seqs[channel] = self._seqs.get(channel, 0) + 1
            ts = max(now, self._last_ts.get(channel, 0))
            self._last_ts[channel] = ts
            message = orjson.dumps(
                {
                    "organization_id": channel,
                    "data": {"seq": seq, "ts_ms": ts, "payload": event["payload"]},
                }
            )
            parts.append(b"PUB %s %d\r\n%s\r\n" % (channel.encode(), len(message), message))
            acks.append({"organization_id": channel, "seq": seq, "ts_ms": ts})
        parts.append(b"PING\r\n")
        self._writer.write(b"".join(parts))
        while True:
            line = await self._reader.readuntil(b"\r\n")
            if line.startswith(b"PONG"):
                return acks
            if line.startswith(b"PING"):
                self._writer.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise HttpError(f"nats answered {line.decode(errors='replace').strip()}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
