"""Clients for the protocol tests: a JSON WebSocket client, a publisher, raw sockets.

Messages are decoded with the standard library's ``json`` so that key order and big
integers are seen exactly as the server wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from athena_cdc.server.app import AthenaServer
from tests.support.servers import http_url, ws_url

Json = Any
RECV_TIMEOUT = 5.0


def loads(text: str | bytes) -> Json:
    return json.loads(text)


class Client:
    """A WebSocket client speaking the protocol's JSON messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv_raw(self, within: float = RECV_TIMEOUT) -> str:
        message = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(message, str), f"expected a text frame, got {message!r}"
        return message

    async def recv(self, within: float = RECV_TIMEOUT) -> dict[str, Json]:
        message = loads(await self.recv_raw(within))
        assert isinstance(message, dict)
        return message

    async def recv_events(self, count: int, within: float = RECV_TIMEOUT) -> list[dict[str, Json]]:
        """The next ``count`` messages, each of which must be an event."""
        events = []
        for _ in range(count):
            message = await self.recv(within)
            assert "data" in message, f"expected an event, got {message}"
            events.append(message)
        return events

    async def send(self, message: Json) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def request(self, message: Json) -> dict[str, Json]:
        """Send a message and return the next message (its reply)."""
        await self.send(message)
        return await self.recv()

    async def travel(
        self, within: float = 20.0, **fields: Json
    ) -> tuple[list[dict[str, Json]], dict[str, Json]]:
        """Send a travel; return the events before the ack, and the ack."""
        await self.send({"type": "travel", **fields})
        return await self.read_travel(within)

    async def read_travel(
        self, within: float = 20.0
    ) -> tuple[list[dict[str, Json]], dict[str, Json]]:
        events: list[dict[str, Json]] = []
        while True:
            message = await self.recv(within)
            if message.get("status") == "travel_complete":
                return events, message
            assert "data" in message, f"unexpected message during a travel: {message}"
            events.append(message)

    async def expect_silence(self, duration: float = 0.3) -> None:
        try:
            message = await asyncio.wait_for(self.ws.recv(), duration)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message, got {message!r}")

    async def ping(self) -> None:
        """A protocol-level round trip: everything queued before it has arrived after it."""
        assert await self.request({"type": "ping"}) == {"status": "pong"}


@contextlib.asynccontextmanager
async def client(
    target: AthenaServer | str,
    name: str | None = "a",
    *,
    subscribed: bool = True,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Client]:
    """A connected client; by default it has already read its ``subscribed`` message."""
    url = target if isinstance(target, str) else ws_url(target)
    all_headers = dict(headers or {})
    if name is not None:
        all_headers["X-Athena-Client"] = name
    async with connect(
        url, additional_headers=all_headers, max_size=None, open_timeout=10, close_timeout=2
    ) as ws:
        c = Client(ws)
        if subscribed:
            hello = await c.recv()
            assert hello["status"] == "subscribed", hello
        yield c


async def upgrade_answer(
    server: AthenaServer, headers: Mapping[str, str], query: str = ""
) -> tuple[int, Json]:
    """A WebSocket upgrade request sent as plain HTTP: the status and the JSON body of a
    refusal (None for a 101)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            ws_url(server).replace("ws://", "http://") + query,
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                **headers,
            },
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


def event(channel: str, payload: Json) -> dict[str, Json]:
    return {"organization_id": channel, "payload": payload}


async def publish(
    server: AthenaServer,
    items: Json,
    *,
    session: aiohttp.ClientSession | None = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Json]]:
    """POST /events, expect 201, return the ``events`` of the answer."""
    status, body = await post_events(server, items, session=session, key=key, headers=headers)
    assert status == 201, body
    assert isinstance(body, dict)
    events: list[dict[str, Json]] = body["events"]
    return events


async def post_events(
    server: AthenaServer,
    items: Json = None,
    *,
    data: bytes | None = None,
    session: aiohttp.ClientSession | None = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Json]:
    """POST /events with a JSON body (or raw ``data``); return the status and the JSON answer."""
    body = data if data is not None else json.dumps(items).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        all_headers["X-Athena-Key"] = key
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        async with session.post(
            http_url(server, "/events"), data=body, headers=all_headers
        ) as response:
            text = await response.read()
            if response.status != 201 or response.content_type == "application/json":
                assert response.content_type == "application/json", (response.status, text)
            return response.status, loads(text)


async def publish_many(
    server: AthenaServer, channel: str, payloads: Iterable[Json]
) -> list[dict[str, Json]]:
    return await publish(server, [event(channel, p) for p in payloads])


async def get(server: AthenaServer, path: str) -> tuple[int, str, str]:
    """GET ``path``: status, content type, body text."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(http_url(server, path)) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def metric_value(text: str, name: str) -> float:
    """The value of an unlabelled sample of a Prometheus text page (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def metric(server: AthenaServer, name: str) -> float:
    status, _, text = await get(server, "/metrics")
    assert status == 200
    return metric_value(text, name)


def seqs(events: Iterable[Mapping[str, Json]]) -> list[int]:
    return [e["data"]["seq"] for e in events]


# -- raw sockets -----------------------------------------------------------------------

UPGRADE_HEAD = (
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sock: socket.socket | None = field(default=None)

    def json(self) -> Json:
        return loads(self.body)

    def close(self) -> None:
        self.writer.transport.abort()


async def raw_request(
    port: int,
    path: str = "/ws",
    extra: bytes = b"",
    *,
    upgrade: bool = True,
    rcvbuf: int | None = None,
) -> RawResponse:
    """Send a GET by hand (``extra`` holds raw header lines, each ending in CRLF).

    For a 101 the body is empty and the reader is left at the first WebSocket frame.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
    head = UPGRADE_HEAD if upgrade else b"Host: 127.0.0.1\r\n"
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + head + extra + b"\r\n")
    await writer.drain()
    raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    body = b""
    if status != 101:
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), RECV_TIMEOUT)
    return RawResponse(status, headers, body, reader, writer, sock)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked with a zero key (RFC 6455 requires a mask)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\0\0\0\0" + payload


class RawWebSocket:
    """A WebSocket client by hand on a plain socket: it reads only when asked to.

    Unlike asyncio streams, nothing reads the socket in the background, so a client
    that stops calling :meth:`read_frame` really stops reading (and never answers a
    ping unless :meth:`send_frame` is called).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, name: str, *, rcvbuf: int | None = None) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = (
            b"GET /ws HTTP/1.1\r\n"
            + UPGRADE_HEAD
            + b"X-Athena-Client: "
            + name.encode()
            + b"\r\n\r\n"
        )
        await loop.sock_sendall(sock, request)
        raw = cls(sock)
        while b"\r\n\r\n" not in raw.buffer:
            await raw._receive()
        end = raw.buffer.index(b"\r\n\r\n") + 4
        head, raw.buffer = bytes(raw.buffer[:end]), raw.buffer[end:]
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    async def _receive(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 20)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    async def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._receive()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_frame(self) -> tuple[int, bytes]:
        """One server frame (opcode, payload); EOFError when the socket is closed."""
        first, second = await self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._take(8))
        return first & 0x0F, await self._take(length)

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, masked_frame(opcode, payload))

    def close(self) -> None:
        self.sock.close()
