"""Publishing side of the load: ``POST /events`` over one keep-alive HTTP/1.1 connection.

A hand-written client (a few dozen lines over asyncio streams) rather than aiohttp's, so
publishing costs the load generator little and the same for every server. Each event's
payload is ``{"t": <time.time_ns() // 1000 at publish>, "pad": "..."}``; receivers
subtract ``t`` from their own clock to get the publish -> receive latency. Microseconds,
not nanoseconds: a 19-digit number sends athena-cdc's publish path to its exact (slower)
big-integer JSON decoder, which typical payloads never hit.

Paced publishing sends, every ``interval`` seconds, one POST with all events due by then
(a JSON array), so a rate of 200/s with a 5 ms interval is one event per POST and 5,000/s
is ~25 events per POST. If a POST takes longer than the interval the next one catches up.
:func:`publish_producers` instead runs several producers side by side, each publishing
one event per request on its own schedule (the many-tenants shape).

:class:`WsPublisher` publishes to athena-cdc with the WebSocket ``publish`` message over
one connection per producer (``--publish-via ws``): the same events and the same wait
for the answer (``published``, sent once the events are durable, as the 201 is).

"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from athena_cdc.bench import auth as bench_auth


def payload(pad: int) -> dict[str, object]:
    """An event payload carrying its publish time; ``pad`` characters of filler."""
    return {"t": time.time_ns() // 1000, "pad": "x" * pad}


def pad_for(size: int) -> int:
    """Filler length for a payload of about ``size`` bytes once encoded as JSON."""
    return max(0, size - len(orjson.dumps({"t": time.time_ns() // 1000, "pad": ""})))


class HttpError(Exception):
    """A POST that was not answered with 2xx."""


class Publisher:
    """One keep-alive connection to a server's HTTP port (``tls``: HTTPS, the system's CAs;
    ``headers``: sent with every POST; ``path``: where :meth:`publish` posts)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        headers: Mapping[str, str] | None = None,
        path: str = "/events",
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        sent = {**bench_auth.headers(), **(headers or {})}
        self._auth = "".join(f"{k}: {v}\r\n" for k, v in sent.items())

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=64 * 1024**2, ssl=True if self.tls else None
        )

    async def post(self, body: bytes, path: str | None = None) -> tuple[int, bytes]:
        """POST ``body`` (JSON); return status and response body."""
        # Servers drop idle keep-alive connections (Node after 5 s): rather than retry a
        # POST that may have been applied, open a fresh connection after a pause.
        if self._writer is not None and time.monotonic() - self._last_used > 2.0:
            await self.close()
        if self._writer is None or self._writer.is_closing():
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(
            f"POST {path or self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{self._auth}\r\n".encode()
            + body
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(None, 2)[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            data = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = await self._read_chunked()
        else:
            data = await self._reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        self._last_used = time.monotonic()
        return status, data

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def publish(self, events: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        """Publish events (one POST); return the server's acks, raise unless 201."""
        status, data = await self.post(orjson.dumps(list(events)))
        if status != 201:
            raise HttpError(f"POST {self.path} answered {status}: {data[:200]!r}")
        acks: list[dict[str, object]] = orjson.loads(data)["events"]
        return acks

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WsPublisher:
    """One WebSocket connection to athena-cdc's ``/ws`` publishing with ``publish`` messages.

    Hand-written like :class:`Publisher` (the load generator's cost stays small). Frames
    are masked with the key 0: masking is required of a client (RFC 6455 §5.3), a random
    key only of browsers, and XOR with 0 leaves the bytes as they are. Publishes may be
    sent without waiting (``publish`` called again before the last returned): a reader
    task hands each answer to its publish, in order.
    """

    def __init__(self, host: str, port: int, name: str) -> None:
        self.host = host
        self.port = port
        self.name = name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._answers: asyncio.Task[None] | None = None
        self._auth = "".join(f"{k}: {v}\r\n" for k, v in bench_auth.headers().items())

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=64 * 1024**2
        )
        key = base64.b64encode(os.urandom(16)).decode()
        self._writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Athena-Client: {self.name}\r\n"
            f"{self._auth}\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise HttpError(f"the upgrade was answered {head[:200]!r}")
        await self._message()  # "subscribed" (to the producer's own, silent, channel)
        self._answers = asyncio.create_task(self._read_answers())

    async def _read_answers(self) -> None:
        try:
            while True:
                answer = orjson.loads(await self._message())
                waiting = self._waiting.pop(answer.get("id"), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        except (HttpError, OSError, asyncio.IncompleteReadError) as exc:
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(HttpError(f"the WebSocket failed: {exc!r}"))

    async def publish(self, events: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        self._id += 1
        answered = self._waiting[self._id] = asyncio.get_running_loop().create_future()
        body = orjson.dumps({"type": "publish", "id": self._id, "events": list(events)})
        size = len(body)
        if size < 126:
            head = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        self._writer.write(head + b"\0\0\0\0" + body)
        answer = await answered
        if answer.get("status") != "published":
            raise HttpError(f"publish answered {answer}")
        acks: list[dict[str, object]] = answer["events"]
        return acks

    async def _message(self) -> bytes:
        """The next text message (server frames are not masked nor, here, fragmented)."""
        assert self._reader is not None and self._writer is not None
        while True:
            first, second = await self._reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self._reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
            data = await self._reader.readexactly(size)
            opcode = first & 0x0F
            if opcode == 0x1:
                return data
            if opcode == 0x9:  # ping: pong with the same data
                self._writer.write(struct.pack("!BB", 0x8A, 0x80 | len(data)) + b"\0" * 4 + data)
            elif opcode == 0x8:
                raise HttpError(f"the server closed the WebSocket: {data[:200]!r}")

    async def close(self) -> None:
        if self._answers is not None:
            self._answers.cancel()
            self._answers = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EventPublisher(Protocol):
    """What the scenarios publish with: :class:`Publisher`, :class:`WsPublisher` (or the
    harness's ``bench.nats.NatsPublisher``)."""

    async def connect(self) -> None: ...
    async def publish(self, events: Sequence[Mapping[str, object]]) -> list[dict[str, object]]: ...
    async def close(self) -> None: ...


@dataclass
class PublishReport:
    """What a paced run published."""

    events: int = 0
    posts: int = 0
    seconds: float = 0.0
    per_channel: dict[str, int] = field(default_factory=dict)
    post_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def publish_paced(
    publisher: EventPublisher,
    rate: float,
    duration: float,
    pick_channel: Callable[[], str],
    pad: int,
    interval: float = 0.005,
    say: Callable[[str], None] | None = None,
) -> PublishReport:
    """Publish ``rate`` events per second for ``duration`` seconds (``say``: a progress
    line about once a second)."""
    report = PublishReport()
    start = time.monotonic()
    tick = 0
    said = 0
    while True:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= duration:
            break
        if say is not None and int(elapsed) > said:
            said = int(elapsed)
            say(f"  {elapsed:4.1f} s of {duration:g}: {report.events:,} published")
        due = int(elapsed * rate) + 1 - report.events
        if due > 0:
            events: list[Mapping[str, object]] = []
            for _ in range(due):
                channel = pick_channel()
                report.per_channel[channel] = report.per_channel.get(channel, 0) + 1
                events.append({"organization_id": channel, "payload": payload(pad)})
            await publisher.publish(events)
            report.events += due
            report.posts += 1
            report.post_ms.append((time.monotonic() - now) * 1000)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))
    report.seconds = time.monotonic() - start
    return report


def random_picker(channels: Sequence[str], seed: int = 1) -> Callable[[], str]:
    chooser = random.Random(seed)
    return lambda: chooser.choice(channels)


async def publish_producers(
    publishers: Sequence[EventPublisher],
    channel_sets: Sequence[Sequence[str]],
    rate: float,
    events: int,
    pad: int,
    say: Callable[[str], None] | None = None,
    pipelined: bool = False,
) -> PublishReport:
    """``events`` single-event publishes at ``rate`` in all, shared by the producers.

    Producer ``k`` publishes to ``channel_sets[k]`` (each tenant has one writer, so a
    channel's events leave in order), one event per request, every
    ``len(publishers) / rate`` seconds; a producer that falls behind sends its next
    event as soon as the previous one is answered (never two in one request), so a
    server that cannot keep up shows as a longer run (``report.rate`` below ``rate``).
    ``pipelined`` (WebSocket publishers only): each publish leaves on schedule without
    waiting for the previous answer; the run ends when every answer is in.
    """
    report = PublishReport()
    count = len(publishers)
    interval = count / rate
    start = time.monotonic()
    shares = [events // count + (1 if k < events % count else 0) for k in range(count)]

    async def produce(k: int) -> None:
        pick = random_picker(channel_sets[k], seed=k + 1)
        first = start + k * interval / count  # spread the producers over one interval
        for i in range(shares[k]):
            delay = first + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            channel = pick()
            report.per_channel[channel] = report.per_channel.get(channel, 0) + 1
            sent = time.monotonic()
            publishing = publishers[k].publish(
                [{"organization_id": channel, "payload": payload(pad)}]
            )
            if pipelined:
                in_flight.append(asyncio.create_task(answered(publishing, sent)))
            else:
                await answered(publishing, sent)

    async def answered(publishing: Awaitable[object], sent: float) -> None:
        await publishing
        report.post_ms.append((time.monotonic() - sent) * 1000)
        report.events += 1
        report.posts += 1

    async def progress() -> None:
        while True:
            await asyncio.sleep(1.0)
            if say is not None:
                elapsed = time.monotonic() - start
                say(f"  {elapsed:4.1f} s: {report.events:,} of {events:,} published")

    in_flight: list[asyncio.Task[None]] = []
    ticker = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(produce(k) for k in range(count)))
        await asyncio.gather(*in_flight)
    finally:
        ticker.cancel()
    report.seconds = time.monotonic() - start
    return report
