"""Every socket has a deadline: slow headers, endless bodies, idle keep-alive, no TLS hello.

Each test opens a raw socket that misbehaves, and measures when the server closes it:
not before the deadline (so it is the deadline that closed it), and at most a
generous slack after it. Meanwhile a well-behaved client on another connection keeps
being served, and nothing lands in the log above INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import client
from tests.support.servers import http_url, running_server
from tests.support.tls import self_signed_certificate

HEADER = 1.0
BODY = 1.5
KEEPALIVE = 3.5
TLS = 1.0
SLACK = 2.5  # a loaded, shared machine: late is fine within this, early never
EARLY = 0.1  # timers may fire this much early (loop clock granularity)


@pytest.fixture
async def server() -> AsyncIterator[AthenaServer]:
    async with running_server(
        store="memory",
        header_timeout=HEADER,
        body_timeout=BODY,
        keepalive_timeout=KEEPALIVE,
    ) as srv:
        yield srv


@pytest.fixture(autouse=True)
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A misbehaving peer is the peer's problem: nothing above INFO in the server's log."""
    with caplog.at_level(logging.INFO):
        yield
    loud = [r for r in caplog.records if r.levelno > logging.INFO]
    assert not loud, [r.getMessage() for r in loud]


@contextlib.asynccontextmanager
async def served_meanwhile(url: str) -> AsyncIterator[list[float]]:
    """A client doing GET /health on one keep-alive connection, every 100 ms.

    Yields the list of its latencies; on exit, checks every request succeeded and
    the connection was reused (so the deadlines do not cut a healthy keep-alive
    connection that sends its requests at once).
    """
    latencies: list[float] = []
    failures: list[BaseException] = []
    connector = aiohttp.TCPConnector(limit=1, ssl=False)

    async def loop() -> None:
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        assert response.status == 200
                        await response.read()
                except Exception as exc:  # collected, asserted below
                    failures.append(exc)
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    try:
        yield latencies
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not failures, failures
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 1.0, f"the healthy client stalled: {max(latencies):.2f} s"


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response with a Content-Length: head and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


def json_response(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return status, parsed


def assert_closed_at(elapsed: float, deadline: float) -> None:
    assert deadline - EARLY <= elapsed <= deadline + SLACK, (
        f"closed after {elapsed:.2f} s; deadline {deadline} s"
    )


async def test_slowloris_headers_get_a_json_408_at_the_header_deadline(
    server: AthenaServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: ")

    async def drip() -> None:  # one byte every 200 ms: the headers never end
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.2)
                writer.write(b"a")
                await writer.drain()

    dripping = asyncio.create_task(drip())
    async with served_meanwhile(http_url(server, "/health")):
        raw = await read_until_closed(reader, HEADER + SLACK)
        elapsed = time.monotonic() - started
    dripping.cancel()
    writer.close()
    assert_closed_at(elapsed, HEADER)
    status, body = json_response(raw)
    assert status == 408
    assert body["error"] == "request_timeout"
    assert "headers" in str(body["message"])


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    server: AthenaServer,
) -> None:
    async with served_meanwhile(http_url(server, "/health")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        raw = await read_until_closed(reader, HEADER + SLACK)
        elapsed = time.monotonic() - started
    writer.close()
    # Well before the keep-alive timeout (aiohttp's own timer, which would also close
    # it): a socket that never sent a request gets the header deadline. Nothing was
    # asked, so nothing is answered.
    assert HEADER - EARLY <= elapsed < KEEPALIVE - 0.5, f"closed after {elapsed:.2f} s"
    assert raw == b""


async def test_an_idle_keep_alive_connection_is_closed_at_the_keepalive_timeout(
    server: AthenaServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await read_response(reader)
    answered = time.monotonic()
    assert first.startswith(b"HTTP/1.1 200"), first
    async with served_meanwhile(http_url(server, "/health")):
        # Idle longer than the header deadline: only the keep-alive timeout applies.
        rest = await read_until_closed(reader, KEEPALIVE + SLACK)
        elapsed = time.monotonic() - answered
    writer.close()
    assert_closed_at(elapsed, KEEPALIVE)
    assert rest == b""


async def test_the_next_request_on_a_keep_alive_connection_has_its_own_header_deadline(
    server: AthenaServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(HEADER + 0.3)  # idle, within the keep-alive time
    writer.write(b"GET /health HTTP/1.1\r\nHo")  # ...and the rest never comes
    started = time.monotonic()
    raw = await read_until_closed(reader, HEADER + SLACK)
    elapsed = time.monotonic() - started
    writer.close()
    assert_closed_at(elapsed, HEADER)
    status, body = json_response(raw)
    assert status == 408
    assert body["error"] == "request_timeout"


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_a_body_that_never_ends_gets_a_json_408_at_the_body_deadline(
    server: AthenaServer, framing: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    length = (
        b"Transfer-Encoding: chunked\r\n"
        if framing == "chunked"
        else b"Content-Length: 1000000\r\n"
    )
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + length + b"\r\n"
    )
    started = time.monotonic()

    async def drip() -> None:  # a little body every 200 ms, never the end of it
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"1\r\n[\r\n" if framing == "chunked" else b"[")
                await writer.drain()
                await asyncio.sleep(0.2)

    dripping = asyncio.create_task(drip())
    async with served_meanwhile(http_url(server, "/health")):
        raw = await read_until_closed(reader, BODY + SLACK)
        elapsed = time.monotonic() - started
    dripping.cancel()
    writer.close()
    assert_closed_at(elapsed, BODY)
    status, body = json_response(raw)
    assert status == 408
    assert body["error"] == "request_timeout"
    assert "body" in str(body["message"])


async def test_whole_requests_and_websockets_are_not_cut_by_the_deadlines(
    server: AthenaServer,
) -> None:
    """One keep-alive connection used for longer than every deadline, and a silent WebSocket."""

    async def keep_publishing() -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            started = time.monotonic()
            count = 0
            while time.monotonic() - started < KEEPALIVE + 0.5:
                async with session.post(
                    http_url(server, "/events"),
                    json={"organization_id": "kept", "payload": count},
                ) as response:
                    assert response.status == 201
                count += 1
                await asyncio.sleep(0.25)
            return count

    async def stay_silent() -> None:
        async with client(server, "long") as ws:
            await asyncio.sleep(KEEPALIVE + 0.5)
            await ws.ping()

    count, _ = await asyncio.gather(keep_publishing(), stay_silent())
    assert count >= 8


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_a_tls_connection_without_a_handshake_is_closed_at_the_tls_deadline(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    async with running_server(
        store="memory",
        tls_cert=str(cert),
        tls_key=str(key),
        tls_handshake_timeout=TLS,
        header_timeout=30.0,
        keepalive_timeout=30.0,
    ) as tls_server:
        trust = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
        started = time.monotonic()  # no ClientHello is ever sent
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as https:
            async with https.get(f"https://127.0.0.1:{tls_server.port}/health") as response:
                assert response.status == 200  # a real TLS client meanwhile
            raw = await read_until_closed(reader, TLS + SLACK)
        elapsed = time.monotonic() - started
        writer.close()
    assert_closed_at(elapsed, TLS)
    assert raw == b""
