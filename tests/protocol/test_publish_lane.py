"""The lean lane of POST /events answers exactly as aiohttp's handler does.

Each request is sent by hand over a raw socket in three forms: whole in one write to a
server with the lane (the lane answers it), the same to a server without it (aiohttp
answers), and in forms the lane leaves to aiohttp (split across two writes, or with a
header it does not know). The answers are compared byte for byte, but for the Date
header and the ack's ts_ms, and so is whether the connection stays open after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from athena_cdc.config import Settings
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.remote import LogServer, OwnerLink
from athena_cdc.server.app import AthenaServer
from athena_cdc.server.publish_lane import (
    JSON_TYPES,
    LaneRequestHandler,
    PublishLane,
    split_request,
)
from athena_cdc.server.workers import WORKER_HEADER, WorkerRole
from tests.protocol._support import get, metric
from tests.support.servers import running_server
from tests.support.tls import self_signed_certificate
from tests.workers._support import workers_process

SECRET = "athena-test-secret-of-at-least-32-bytes"
PUBLISH_KEY = "publish-key-of-the-trusted-producer"
READ_TIMEOUT = 5.0


class Conn:
    """One raw keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, *parts: bytes) -> None:
        """Each part in its own TCP segment (a pause between them)."""
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(0.05)
            self.writer.write(part)
            await self.writer.drain()

    async def response(self) -> bytes:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        length = int(re.search(rb"(?i)\r\ncontent-length: (\d+)", head)[1])  # type: ignore[index]
        return head + await asyncio.wait_for(self.reader.readexactly(length), READ_TIMEOUT)

    async def closed(self, within: float = 0.3) -> bool:
        """Whether the server closes the connection (EOF) within ``within`` seconds."""
        try:
            rest = await asyncio.wait_for(self.reader.read(1), within)
        except TimeoutError:
            return False
        assert rest == b"", rest
        return True

    def close(self) -> None:
        self.writer.transport.abort()


def post(body: bytes, *headers: bytes, content_type: bytes = b"application/json") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\n" % len(body) + lines + b"\r\n" + body
    )


def normalised(raw: bytes) -> bytes:
    """A response without what changes from one answer to the next: Date, ts_ms."""
    raw = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)
    return re.sub(rb'"ts_ms":\d{13}', b'"ts_ms":0', raw)


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + 3600), **claims}, SECRET, algorithm="HS256")


def ev(channel: str, payload: Any) -> bytes:
    return orjson.dumps({"organization_id": channel, "payload": payload})


# Each case: the request (one whole write) and the settings of the server it goes to.
PLAIN: list[bytes] = [
    post(ev("a", {"x": 1})),
    post(b"[" + ev("a", 2) + b"," + ev("b", 3) + b"]"),
    post(b"[]"),
    post(b"{not json"),
    post(b'{"organization_id": 5, "payload": 1}'),
    post(b"[1]"),
    post(b""),
    post(ev("a", 4), content_type=b"application/json; charset=utf-8"),
    post(ev("a", 5), b"Connection: keep-alive", b"Accept: */*", b"User-Agent: test"),
    post(b'{"organization_id": "bad channel!", "payload": 1}'),
    post(b"[" + b",".join([b"0"] * 10_001) + b"]"),  # 413, and closed
]
KEYED: list[bytes] = [
    post(ev("a", 1)),  # no key: 401, closed (the body was never read)
    post(ev("a", 1), b"X-Athena-Key: wrong-key"),
    post(ev("a", 1), b"X-Athena-Key: " + PUBLISH_KEY.encode()),
    post(b"", b"X-Athena-Key: wrong"),  # no body to leave unread: stays open
]
JWT: list[bytes] = [
    post(ev("a", 1)),
    post(ev("a", 1), b"Authorization: Bearer not-a-token"),
    post(ev("a", 1), b"Authorization: Bearer " + token(publish=["b*"]).encode()),  # 403
    post(ev("b1", 1), b"Authorization: Bearer " + token(publish=["b*"]).encode()),
    post(ev("b1", 2), b"Authorization: Bearer " + token(channels=["*"]).encode()),
]
SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "keyed": {"publish_key": PUBLISH_KEY},
    "jwt": {"jwt_secret": SECRET},
    "full": {"memory_limit": 32 * 1024},  # no room for 200 new channels: 503
}
CASES: dict[str, list[bytes]] = {
    "plain": PLAIN,
    "keyed": KEYED,
    "jwt": JWT,
    "full": [
        post(b"[" + b",".join(ev(f"c{i}", i) for i in range(200)) + b"]"),
        post(ev("c0", 1)),
    ],
}


def fallback_forms(request: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """The same request in forms the lane leaves to aiohttp."""
    head, _, body = request.partition(b"\r\n\r\n")
    cut = len(head) + 4 + len(body) // 2 if body else len(head) // 2
    yield "split", [request[:cut], request[cut:]]
    yield "header", [head + b"\r\nX-Unusual: 1\r\n\r\n" + body]


async def answers(server: AthenaServer, requests: list[list[bytes]]) -> list[tuple[bytes, bool]]:
    """Each request on a connection of its own: the answer, and whether it closed."""
    result = []
    for parts in requests:
        conn = await Conn.open(server.port)
        try:
            await conn.send(*parts)
            result.append((normalised(await conn.response()), await conn.closed()))
        finally:
            conn.close()
    return result


def served(server: AthenaServer) -> int:
    lane = server._publish_lane
    assert isinstance(lane, PublishLane)
    return lane.served


@pytest.mark.parametrize("case", list(CASES))
async def test_the_lanes_answers_are_aiohttps_byte_for_byte(case: str) -> None:
    requests = CASES[case]
    async with running_server(store="memory", publish_lane=False, **SETTINGS[case]) as server:
        expected = await answers(server, [[r] for r in requests])
        assert server._publish_lane is None
    async with running_server(store="memory", **SETTINGS[case]) as server:
        assert await answers(server, [[r] for r in requests]) == expected
        assert served(server) == len(requests)  # every one of them through the lane
    for form in ("split", "header"):
        async with running_server(store="memory", **SETTINGS[case]) as server:
            forms = [dict(fallback_forms(r))[form] for r in requests]
            assert await answers(server, forms) == expected, form
            assert served(server) == 0
    statuses = {int(raw.split(b" ", 2)[1]) for raw, _ in expected}
    assert statuses & {201} or case == "full"
    assert len(statuses) > 1 or case == "plain"


async def test_a_keep_alive_connection_mixes_lane_and_aiohttp_answers_in_order() -> None:
    async with running_server(store="memory") as server:
        conn = await Conn.open(server.port)
        try:
            await conn.send(post(ev("m", 1)))
            first = await conn.response()
            await conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # aiohttp's
            health = await conn.response()
            await conn.send(post(ev("m", 2)))
            second = await conn.response()
        finally:
            conn.close()
        assert b'"seq":1' in first and b'"seq":2' in second
        assert health.startswith(b"HTTP/1.1 200 ")
        assert served(server) == 2


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_pipelined_requests_are_answered_in_the_order_sent(
    store: str, tmp_path: Path
) -> None:
    async with running_server(
        store=store, data_dir=str(tmp_path), sqlite_commit_interval=0.05
    ) as server:
        conn = await Conn.open(server.port)
        try:
            # Each in its own write, without waiting for the answers: the lane takes
            # them one by one (with sqlite, the next waits for the last one's commit).
            for i in range(1, 21):
                conn.writer.write(post(ev("p", i)))
                if i == 10:
                    conn.writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                await conn.writer.drain()
                await asyncio.sleep(0.002)
            # Several in one write: aiohttp's to answer (not one whole request).
            conn.writer.write(b"".join(post(ev("p", i)) for i in range(21, 26)))
            conn.writer.write(post(ev("p", 26)))
            answers = [await conn.response() for _ in range(27)]
        finally:
            conn.close()
        health = answers.pop(10)
        assert health.startswith(b"HTTP/1.1 200 ")
        seqs = [orjson.loads(a.partition(b"\r\n\r\n")[2])["events"][0]["seq"] for a in answers]
        assert seqs == list(range(1, 27))
        assert 1 <= served(server) <= 20


async def test_a_store_slower_than_the_keep_alive_timeout_is_answered(tmp_path: Path) -> None:
    async with running_server(
        store="sqlite",
        data_dir=str(tmp_path),
        sqlite_commit_interval=2.0,  # the second append waits this long for its commit
        keepalive_timeout=0.8,
    ) as server:
        conn = await Conn.open(server.port)
        try:
            await conn.send(post(ev("s", 1)))
            assert b" 201 " in (await conn.response())[:20]
            await conn.send(post(ev("s", 2)))
            started = time.monotonic()
            second = await conn.response()
            assert time.monotonic() - started > 1.0  # it did wait for the commit
            assert second.startswith(b"HTTP/1.1 201 ") and b'"seq":2' in second
            assert not await conn.closed(0.2)
        finally:
            conn.close()
        assert served(server) == 2


async def test_a_connection_used_through_the_lane_is_closed_after_the_keep_alive_timeout() -> None:
    keepalive = 1.5
    async with running_server(
        store="memory", keepalive_timeout=keepalive, header_timeout=0.5
    ) as server:
        conn = await Conn.open(server.port)
        try:
            # Busy for longer than both timeouts: never closed while in use.
            for i in range(1, 8):
                await conn.send(post(ev("k", i)))
                assert (await conn.response()).startswith(b"HTTP/1.1 201 ")
                await asyncio.sleep(0.4)
            answered = time.monotonic()
            assert await conn.closed(keepalive + 3.0)
            idle = time.monotonic() - answered
        finally:
            conn.close()
        assert keepalive - 0.4 - 0.1 <= idle <= keepalive + 2.5, idle
        assert served(server) == 7


async def test_a_draining_server_answers_the_lanes_request_in_flight(tmp_path: Path) -> None:
    from athena_cdc.config import Settings
    from athena_cdc.log.sqlite import SqliteLog

    server = AthenaServer(
        Settings(port=0, store="sqlite", data_dir=str(tmp_path), sqlite_commit_interval=1.0)
    )
    await server.start()
    assert isinstance(server.log, SqliteLog)
    path = server.log.path
    conn = await Conn.open(server.port)
    try:
        await conn.send(post(ev("d", 1)))
        await conn.response()
        await conn.send(post(ev("d", 2)))  # waits ~1 s for its commit
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop())
        answer = await conn.response()
        assert answer.startswith(b"HTTP/1.1 201 ") and b'"seq":2' in answer
        assert await conn.closed(5.0)
    finally:
        conn.close()
        await stopping
    assert served(server) == 2
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2


async def test_publish_requests_are_counted_once_each() -> None:
    name = "athena_cdc_publish_requests_total"
    async with running_server(store="memory") as server:
        conn = await Conn.open(server.port)
        try:
            for body in (ev("n", 1), ev("n", 2), b"{oops", ev("n", 3)):
                await conn.send(post(body))
                await conn.response()
        finally:
            conn.close()
        assert served(server) == 4
        assert await metric(server, name + '{status="201"}') == 3
        assert await metric(server, name + '{status="400"}') == 1


async def test_under_workers_the_lane_names_the_worker(tmp_path: Path) -> None:
    with workers_process(tmp_path, "--store", "memory") as proc:
        for _ in range(4):  # connections land on either worker
            conn = await Conn.open(proc.port)
            try:
                await conn.send(post(ev("w", 1)))
                lane = await conn.response()
                await conn.send(post(ev("w", 1))[:-3], post(ev("w", 1))[-3:])
                aiohttp_answer = await conn.response()
            finally:
                conn.close()
            names = [re.split(rb":", line)[0] for line in lane.split(b"\r\n\r\n")[0].split(b"\r\n")]
            assert names[1:] == [
                b"Content-Type",
                b"Content-Length",
                b"Date",
                b"Server",
                WORKER_HEADER.encode(),
            ]
            worker = re.search(rb"X-Athena-Worker: (\d+)", lane)
            assert worker is not None
            assert worker[0] in aiohttp_answer
            # The same answer but for the seq: aiohttp's took the header by its hook.
            assert re.sub(rb'"seq":\d+', b"", normalised(lane)) == re.sub(
                rb'"seq":\d+', b"", normalised(aiohttp_answer)
            )


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /events HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /events HTTP/1.1\r\nContent-Length: 3\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nContent-Length: 1\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nContent-Length: +2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nContent-Length: 2 \r\n\r\n[]",
        b"POST /events HTTP/1.1\r\n X: folded\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nX\x01: 1\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nX: \xff\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nX: a\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /events HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]GET / HTTP/1.1\r\n\r\n",
        b"POST /events HTTP/1.1\r\nHost: x",
        b"GET /health HTTP/1.1\r\n\r\nGET",
    ],
)
def test_what_is_not_one_plainly_framed_request_is_left_to_aiohttp(request_bytes: bytes) -> None:
    assert split_request(request_bytes) is None


def test_whole_requests_the_lane_does_not_answer_keep_the_parser_usable() -> None:
    assert split_request(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    request = split_request(post(b"[]", b"X-Unusual: 1"))
    assert request is not None
    assert request.fields[b"x-unusual"] == b"1" and request.body == b"[]"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_the_lane_answers_over_tls_too(store: str, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with running_server(
        store=store, data_dir=str(tmp_path / "data"), tls_cert=str(cert), tls_key=str(key)
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        conn = Conn(reader, writer)
        try:
            for i in range(1, 4):
                await conn.send(post(ev("t", i)))
                answer = await conn.response()
                assert answer.startswith(b"HTTP/1.1 201 ") and b'"seq":%d' % i in answer
        finally:
            conn.close()
        # The first request can arrive with the handshake, before aiohttp waits for one:
        # then aiohttp answers it.
        assert served(server) >= 2


def variants(seed: int, count: int) -> list[bytes]:
    """Requests a producer might send: headers in any case and order, with or without
    the optional ones, the key right or wrong, bodies good and bad."""
    rng = random.Random(seed)
    bodies = [ev("v", 1), b"[" + ev("v", 2) + b"," + ev("w", 3) + b"]", b"[]", b"{", b"[1]", b""]
    types = list(JSON_TYPES)
    requests = []
    for _ in range(count):
        body = rng.choice(bodies)
        headers = [
            b"Host: 127.0.0.1:8080",
            b"Content-Type:" + b" " * rng.randint(0, 2) + rng.choice(types),
            b"Content-Length: %d" % len(body),
        ]
        if rng.random() < 0.8:
            headers.append(b"X-Athena-Key: " + rng.choice([PUBLISH_KEY.encode(), b"nope"]))
        for optional in (b"Accept: */*", b"User-Agent: t/1", b"Accept-Encoding: gzip, deflate"):
            if rng.random() < 0.5:
                headers.append(optional)
        if rng.random() < 0.3:
            headers.append(b"Connection: " + rng.choice([b"keep-alive", b"Keep-Alive"]))
        if rng.random() < 0.3:
            headers.append(b"Authorization: Bearer x.y.z")
        rng.shuffle(headers)
        headers = [
            name.upper() + b":" + value if rng.random() < 0.2 else name.lower() + b":" + value
            for name, _, value in (h.partition(b":") for h in headers)
        ]
        requests.append(
            b"POST /events HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
        )
    return requests


async def test_the_lane_agrees_with_aiohttp_on_varied_requests() -> None:
    requests = variants(seed=7, count=40)
    async with running_server(
        store="memory", publish_key=PUBLISH_KEY, publish_lane=False
    ) as server:
        expected = await answers(server, [[r] for r in requests])
    async with running_server(store="memory", publish_key=PUBLISH_KEY) as server:
        assert await answers(server, [[r] for r in requests]) == expected
        assert served(server) == len(requests)
    assert {int(raw.split(b" ", 2)[1]) for raw, _ in expected} >= {201, 400, 401}


async def test_bytes_that_arrive_while_an_append_is_pending_wait_their_turn(
    tmp_path: Path,
) -> None:
    async with running_server(
        store="sqlite", data_dir=str(tmp_path), sqlite_commit_interval=0.5
    ) as server:
        conn = await Conn.open(server.port)
        try:
            await conn.send(post(ev("h", 1)))
            await conn.response()
            await conn.send(post(ev("h", 2)))  # its commit waits ~0.5 s
            await asyncio.sleep(0.1)
            assert server._runner is not None and server._runner.server is not None
            [handler] = server._runner.server.connections
            assert isinstance(handler, LaneRequestHandler)
            assert handler._lane_held == b""  # pending, reading paused
            # As if the transport delivered more despite the pause: held, then answered
            # after the pending one, in order.
            handler.data_received(post(ev("h", 3)) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            second, third, health = [await conn.response() for _ in range(3)]
        finally:
            conn.close()
        assert b'"seq":2' in second and b'"seq":3' in third
        assert health.startswith(b"HTTP/1.1 200 ")
        assert served(server) == 2  # the last two came in one read: aiohttp's


@contextlib.asynccontextmanager
async def worker_server(socket: Path, **settings: Any) -> AsyncIterator[AthenaServer]:
    """Worker 2 of ``--workers``, in this process: its log is the supervisor's, over a
    real link to a LogServer on a memory store."""
    owner = MemoryLog()
    await owner.open()
    log_server = LogServer(str(socket), owner)
    await log_server.start()
    link = OwnerLink(log_server.path)
    await link.connect()
    server = AthenaServer(Settings(port=0, store="memory", **settings), WorkerRole(2, link))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await log_server.stop()
        await owner.close()


async def test_a_workers_lane_answer_names_it_as_aiohttps_does(tmp_path: Path) -> None:
    requests = [[post(ev("w", 1))], [post(b"{")], [post(ev("w", 2))]]
    async with worker_server(tmp_path / "a.sock", publish_lane=False) as server:
        expected = await answers(server, requests)
    async with worker_server(tmp_path / "b.sock") as server:
        assert await answers(server, requests) == expected
        assert served(server) == 3
    assert all(b"\r\nX-Athena-Worker: 2\r\n\r\n" in raw for raw, _ in expected)


async def test_an_append_the_sqlite_log_cannot_write_is_a_503_as_aiohttps(tmp_path: Path) -> None:
    from athena_cdc.log.sqlite import SqliteLog

    requests = [[post(ev("f", 1))], [post(ev("f", 2))]]
    results = []
    for lane in (False, True):
        data_dir = tmp_path / f"lane-{lane}"
        async with running_server(
            store="sqlite", data_dir=str(data_dir), publish_lane=lane
        ) as server:
            assert isinstance(server.log, SqliteLog)
            with contextlib.closing(sqlite3.connect(server.log.path)) as side:
                side.execute("ALTER TABLE events RENAME TO events_elsewhere")  # writes fail
                side.commit()
                results.append(await answers(server, requests))
                side.execute("ALTER TABLE events_elsewhere RENAME TO events")
                side.commit()
            if lane:
                assert served(server) == 2
    assert results[0] == results[1]
    raw, closed = results[1][0]
    assert raw.startswith(b"HTTP/1.1 503 ") and b'"error":"unavailable"' in raw and not closed


async def exchange(port: int, parts: list[bytes], quiet: float = 0.4) -> bytes:
    """All a connection reads after sending ``parts`` (each in its own segment), until
    the server closes it (``<EOF>``) or is ``quiet`` seconds (``<open>``)."""
    conn = await Conn.open(port)
    try:
        await conn.send(*parts)
        out = b""
        while True:
            try:
                chunk = await asyncio.wait_for(conn.reader.read(65536), quiet)
            except TimeoutError:
                return normalised(out) + b"<open>"
            if not chunk:
                return normalised(out) + b"<EOF>"
            out += chunk
    finally:
        conn.close()


NO_HOST = (
    b"POST /events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(ev("h", 1))
    + ev("h", 1)
)
# Requests the lane must not answer differently from aiohttp, sent over real sockets.
HOSTILE: dict[str, list[bytes]] = {
    # aiohttp refuses an HTTP/1.1 request without Host (RFC 9112 section 3.2): a 400,
    # closed, and nothing published.
    "no host": [NO_HOST],
    "no host after a lane request": [post(ev("h", 2)), NO_HOST],
    # Forms a plain publish could be mistaken for.
    "absolute-form target": [post(ev("h", 3)).replace(b"/events", b"http://x/events", 1)],
    "HTTP/1.0": [post(ev("h", 4)).replace(b"HTTP/1.1", b"HTTP/1.0", 1)],
    "lower-case method": [post(ev("h", 5)).replace(b"POST", b"post", 1)],
    "Connection: keep-alive, close": [post(ev("h", 6), b"Connection: keep-alive, close")],
    "Content-Length twice, another case": [
        post(ev("h", 7), b"content-length: %d" % len(ev("h", 7)))
    ],
    "obs-text in a value": [post(ev("h", 8), b"User-Agent: \xe9")],
    "a request glued after the body": [post(ev("h", 9)) + post(ev("h", 10))],
    # A lane request after aiohttp's parser was left in an odd state, and the reverse.
    "after CONNECT": [b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n", post(ev("h", 11))],
    "after a declined upgrade": [
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
        post(ev("h", 12)),
    ],
    "then a split one, then a plain one": [
        post(ev("h", 13)),
        post(ev("h", 14))[:30],
        post(ev("h", 14))[30:],
        post(ev("h", 15)),
    ],
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_requests_are_answered_as_aiohttp_answers_them(case: str) -> None:
    results: list[tuple[bytes, list[str]]] = []
    for lane in (False, True):
        async with running_server(store="memory", publish_lane=lane) as server:
            answer = await exchange(server.port, HOSTILE[case])
            results.append((answer, await counters(server)))
    assert results[1] == results[0], results


async def counters(server: AthenaServer) -> list[str]:
    """The samples of the counters a publish moves: appended, answered, denied."""
    status, _, text = await get(server, "/metrics")
    assert status == 200
    names = ("athena_cdc_events_appended", "athena_cdc_publish_requests", "athena_cdc_auth_denied")
    return [line for line in text.splitlines() if line.startswith(names)]


@pytest.mark.parametrize("publish_lane", [True, False])
async def test_a_client_leaving_mid_body_logs_no_error(
    publish_lane: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A body cut short by the client hanging up goes to aiohttp (not whole): its read
    fails with 'Connection lost', which is the client's doing, not a server error."""
    request = post(b"[" + ev("gone", 1) * 50 + b"]")
    async with running_server(store="memory", publish_lane=publish_lane) as server:
        conn = await Conn.open(server.port)
        await conn.send(request[: len(request) // 2])
        await asyncio.sleep(0.05)
        conn.close()
        await asyncio.sleep(0.2)
        conn = await Conn.open(server.port)  # the server is still there for the next
        try:
            await conn.send(post(ev("gone", 2)))
            assert (await conn.response()).startswith(b"HTTP/1.1 201 ")
        finally:
            conn.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
