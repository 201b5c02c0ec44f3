"""POST /events and the operational endpoints /health, /ready, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from athena_cdc.config import Settings
from athena_cdc.server.app import AthenaServer
from tests.protocol._support import (
    RECV_TIMEOUT,
    client,
    event,
    get,
    metric,
    post_events,
    publish,
    seqs,
)
from tests.support.servers import http_url, running_server


async def travel_all(server: AthenaServer, channel: str) -> list[int]:
    async with client(server, "reader") as c:
        events, _ = await c.travel(organization_id=channel, since_seq=0, limit=50_000)
        return seqs(events)


async def test_single_event_is_201_with_its_seq(server: AthenaServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            http_url(server, "/events"), json={"organization_id": "a", "payload": {"x": 1}}
        ) as response,
    ):
        assert response.status == 201
        assert response.content_type == "application/json"
        text = await response.text()
    body = json.loads(text)
    assert list(body) == ["events"]
    [only] = body["events"]
    assert list(only) == ["organization_id", "seq", "ts_ms"]
    assert only["organization_id"] == "a" and only["seq"] == 1
    assert isinstance(only["ts_ms"], int) and only["ts_ms"] > 1_600_000_000_000


async def test_array_is_201_with_seqs_in_input_order(server: AthenaServer) -> None:
    await publish(server, event("b", 0))
    answer = await publish(
        server, [event("a", 1), event("b", 2), event("a", 3), event("c", 4), event("b", 5)]
    )
    assert [(e["organization_id"], e["seq"]) for e in answer] == [
        ("a", 1),
        ("b", 2),
        ("a", 2),
        ("c", 1),
        ("b", 3),
    ]
    assert len({e["ts_ms"] for e in answer}) >= 1
    async with client(server, "a") as c:
        events, _ = await c.travel(organization_id="a")
        assert [e["data"]["payload"] for e in events] == [1, 3]
        assert [e["data"]["ts_ms"] for e in events] == [answer[0]["ts_ms"], answer[2]["ts_ms"]]


async def test_empty_array_is_201_with_no_events(server: AthenaServer) -> None:
    assert await publish(server, []) == []


async def test_other_keys_of_an_event_are_ignored(server: AthenaServer) -> None:
    [answer] = await publish(server, {"organization_id": "a", "payload": 1, "extra": True})
    assert answer["seq"] == 1


async def test_null_payload_is_an_event(server: AthenaServer) -> None:
    [answer] = await publish(server, {"organization_id": "a", "payload": None})
    assert answer["seq"] == 1


PAYLOAD = b'{"organization_id":"a","payload":%b}'

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{organization_id: a}", "invalid_json"),
    ("empty body", b"", "invalid_json"),
    ("truncated", b'{"organization_id":"a","payload":', "invalid_json"),
    ("number", b"5", "invalid_event"),
    ("string", b'"event"', "invalid_event"),
    ("null", b"null", "invalid_event"),
    ("missing organization_id", b'{"payload":1}', "invalid_event"),
    ("null organization_id", b'{"organization_id":null,"payload":1}', "invalid_event"),
    ("numeric organization_id", b'{"organization_id":5,"payload":1}', "invalid_event"),
    ("empty organization_id", b'{"organization_id":"","payload":1}', "invalid_event"),
    (
        "long organization_id",
        b'{"organization_id":"' + b"x" * 257 + b'","payload":1}',
        "invalid_event",
    ),
    ("control organization_id", b'{"organization_id":"a\\u0007","payload":1}', "invalid_event"),
    ("missing payload", b'{"organization_id":"a"}', "invalid_event"),
    ("array with a number", b'[{"organization_id":"a","payload":1}, 5]', "invalid_event"),
    (
        "array with missing payload",
        b'[{"organization_id":"a","payload":1},{"organization_id":"a"}]',
        "invalid_event",
    ),
    ("nested array", b'[[{"organization_id":"a","payload":1}]]', "invalid_event"),
    # Not finite: no standard parser reads these back (a Node client's JSON.parse
    # throws on Infinity), on either decoding path (a 20-digit run takes the exact one).
    ("overflow beside a long integer", PAYLOAD % b"[12345678901234567890,1e400]", "invalid_json"),
    (
        "overflow beside long digits in a string",
        PAYLOAD % b'["12345678901234567890",-1E+999]',
        "invalid_json",
    ),
    ("overflow", PAYLOAD % b"1e400", "invalid_json"),
    ("NaN", PAYLOAD % b"NaN", "invalid_json"),
    ("NaN beside a long integer", PAYLOAD % b"[NaN,12345678901234567890]", "invalid_json"),
    ("Infinity", PAYLOAD % b"Infinity", "invalid_json"),
    (
        "-Infinity beside a long integer",
        PAYLOAD % b"[-Infinity,-1234567890123456789]",
        "invalid_json",
    ),
    # Too deep: a parser that recurses would fail on it (Python's json at ~1,000 levels).
    (
        "990 levels around a long integer",
        PAYLOAD % (b"[" * 990 + b"12345678901234567890" + b"]" * 990),
        "invalid_json",
    ),
    ("990 levels", PAYLOAD % (b"[" * 990 + b"]" * 990), "invalid_json"),
    ("255 levels in an array", b"[" + PAYLOAD % (b"[" * 255 + b"]" * 255) + b"]", "invalid_json"),
    (
        "300 levels in an ignored key",
        b'{"organization_id":"a","payload":1,"x":' + b"[" * 300 + b"]" * 300 + b"}",
        "invalid_json",
    ),
    ("2000 levels, more than any parser's limit", b"[" * 2000 + b"]" * 2000, "invalid_json"),
    ("not UTF-8", PAYLOAD % b'"\xff\xfe"', "invalid_json"),
    ("not UTF-8 beside a long integer", PAYLOAD % b'["\xff",12345678901234567890]', "invalid_json"),
    (
        "a lone surrogate beside a long integer",
        PAYLOAD % b'["\\ud800",12345678901234567890]',
        "invalid_json",
    ),
]


@pytest.mark.parametrize(
    ("body", "code"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_is_400_json_and_appends_nothing(
    server: AthenaServer, body: bytes, code: str
) -> None:
    status, answer = await post_events(server, data=body)
    assert status == 400, answer
    assert answer["error"] == code
    assert isinstance(answer["message"], str) and answer["message"]
    assert await travel_all(server, "a") == []
    [first] = await publish(server, event("a", "ok"))
    assert first["seq"] == 1, "a rejected request must not use up seqs"


BIG_INTEGERS = (
    b"[123456789012345678901234567890,-98765432109876543210987654321,18446744073709551616,"
    b'-9223372036854775809,18446744073709551615,-9223372036854775808,"12345678901234567890",'
    b"1" + b"7" * 5000 + b"]"
)


async def test_integers_of_any_size_keep_their_exact_digits(server: AthenaServer) -> None:
    """Beyond 64 bits, and beyond the 4,300 digits Python converts: stored and sent as sent."""
    async with client(server, "big") as c:
        status, answer = await post_events(
            server, data=b'{"organization_id":"big","payload":%b}' % BIG_INTEGERS
        )
        assert status == 201, answer
        live = await c.recv_raw()
        assert live.encode().endswith(b',"payload":%b}}' % BIG_INTEGERS), live[:200]
        await c.send({"type": "travel", "organization_id": "big"})
        replayed = await c.recv_raw()
        assert replayed == live
        assert json.loads(replayed, parse_int=str)["data"]["payload"][-1] == "1" + "7" * 5000


def nested(depth: int) -> bytes:
    return b"[" * depth + b"7" + b"]" * depth


@pytest.mark.parametrize("long_number", [False, True], ids=["orjson", "exact path"])
async def test_payload_nested_254_levels_in_an_array_is_accepted_intact(
    memory_server: AthenaServer, long_number: bool
) -> None:
    """The limit: a batch body of 256 levels, the payload's 254 of them."""
    payload = nested(254)
    if long_number:
        payload = payload.replace(b"7", b"12345678901234567890")
    body = b"[" + PAYLOAD % payload + b"]"
    status, answer = await post_events(memory_server, data=body)
    assert status == 201, answer
    async with client(memory_server, "reader") as c:
        await c.send({"type": "travel", "organization_id": "a"})
        text = await c.recv_raw()
        assert text.encode().endswith(b',"payload":%b}}' % payload)


async def test_deep_nesting_is_answered_in_json_not_a_500(memory_server: AthenaServer) -> None:
    for depth in (255, 300, 990, 5000, 100_000):
        for number in (b"7", b"12345678901234567890"):
            body = PAYLOAD % nested(depth).replace(b"7", number)
            status, answer = await post_events(memory_server, data=body)
            assert (status, answer["error"]) == (400, "invalid_json"), (depth, answer)
            assert "nested more than 254 levels" in answer["message"], answer
    async with client(memory_server, "reader") as c:
        events, _ = await c.travel(organization_id="a")
        assert events == []


async def test_one_bad_item_rejects_the_whole_array(server: AthenaServer) -> None:
    await publish(server, event("a", "before"))
    items: list[Any] = [event("a", i) for i in range(50)]
    items.insert(30, {"organization_id": "a"})
    status, answer = await post_events(server, items)
    assert status == 400 and answer["error"] == "invalid_event"
    assert answer["index"] == 30
    assert "30" in answer["message"]
    assert await travel_all(server, "a") == [1]
    [after] = await publish(server, event("a", "after"))
    assert after["seq"] == 2


async def test_more_than_10000_events_is_413_and_appends_nothing(server: AthenaServer) -> None:
    status, answer = await post_events(server, [event("a", i) for i in range(10_001)])
    assert status == 413 and answer["error"] == "too_many_events", answer
    assert isinstance(answer["message"], str) and answer["message"]
    assert await travel_all(server, "a") == []
    assert len(await publish(server, [event("a", i) for i in range(10_000)])) == 10_000


def body_of_size(size: int) -> bytes:
    """One valid event whose JSON body is exactly ``size`` bytes."""
    head, tail = b'{"organization_id":"a","payload":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_body_of_10_mib_is_accepted(memory_server: AthenaServer) -> None:
    status, answer = await post_events(memory_server, data=body_of_size(10 * 1024 * 1024))
    assert status == 201, answer


@pytest.fixture
async def quick_stop_server() -> AsyncIterator[AthenaServer]:
    """A memory server that does not wait long for half-read uploads when it stops."""
    async with running_server(store="memory", shutdown_timeout=0.5) as srv:
        yield srv


@pytest.mark.parametrize("extra", [1, 1024, 2 * 1024 * 1024])
async def test_body_over_10_mib_is_413_json(quick_stop_server: AthenaServer, extra: int) -> None:
    status, answer = await post_events(
        quick_stop_server, data=body_of_size(10 * 1024 * 1024 + extra)
    )
    assert status == 413 and answer["error"] == "body_too_large", answer
    assert isinstance(answer["message"], str) and answer["message"]
    assert await travel_all(quick_stop_server, "a") == []


async def test_stopping_is_prompt_after_rejecting_a_large_body() -> None:
    """A 413 sent before the body was read must not hold the drain for shutdown_timeout."""
    server = AthenaServer(Settings(port=0, store="memory", shutdown_timeout=4.0))
    await server.start()
    try:
        status, _ = await post_events(server, data=body_of_size(11 * 1024 * 1024))
        assert status == 413
    finally:
        started = time.monotonic()
        await server.stop()
    assert time.monotonic() - started < 2.0


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("extra", [1, 1024, 2 * 1024 * 1024])
async def test_chunked_body_over_10_mib_is_413_json(
    quick_stop_server: AthenaServer, extra: int
) -> None:
    """Without Content-Length the limit must hold too."""
    data = body_of_size(10 * 1024 * 1024 + extra)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            http_url(quick_stop_server, "/events"),
            data=chunks(data),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 413, await response.text()
        assert response.content_type == "application/json"
        assert (await response.json())["error"] == "body_too_large"
    assert await travel_all(quick_stop_server, "a") == []


async def test_publish_key_is_required_when_configured() -> None:
    async with running_server(store="memory", publish_key="s3cret") as srv:
        for key in (None, "", "wrong", "s3cret2", "S3CRET"):
            status, answer = await post_events(srv, event("a", 1), key=key)
            assert status == 401, (key, answer)
            assert answer["error"] == "unauthorized" and answer["message"]
        assert await travel_all(srv, "a") == []
        status, answer = await post_events(srv, event("a", 1), key="s3cret")
        assert status == 201 and answer["events"][0]["seq"] == 1
        # The key is checked before the body: a bad body without a key is still 401.
        status, _ = await post_events(srv, data=b"not json")
        assert status == 401


async def test_no_key_is_needed_when_none_is_configured(memory_server: AthenaServer) -> None:
    status, _ = await post_events(memory_server, event("a", 1), key="anything")
    assert status == 201


ACCEPTED_MEDIA_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON; Charset=UTF-8",
    'application/json;charset="utf8"',
]
REFUSED_MEDIA_TYPES = [
    None,  # no Content-Type at all
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "text/json",
    "application/jsonx",
    "application/json; charset=latin-1",
    "application/ld+json",
    "application/json\xff\xfe",  # not even UTF-8
]


@pytest.mark.parametrize("content_type", ACCEPTED_MEDIA_TYPES)
async def test_json_media_type_is_accepted(memory_server: AthenaServer, content_type: str) -> None:
    status, answer = await post_events(
        memory_server, event("a", 1), headers={"Content-Type": content_type}
    )
    assert status == 201, answer


@pytest.mark.parametrize("content_type", REFUSED_MEDIA_TYPES)
async def test_other_media_types_are_415_json_and_append_nothing(
    memory_server: AthenaServer, content_type: str | None
) -> None:
    """A web page can send these cross-origin without a CORS preflight: never accepted."""
    head = b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type.encode("latin-1") + b"\r\n"
    status, content, answer = await raw_post(
        memory_server, head, b'{"organization_id":"a","payload":1}'
    )
    assert status == 415, answer
    assert content.startswith("application/json")
    body = json.loads(answer)
    assert body["error"] == "unsupported_media_type" and "application/json" in body["message"]
    async with client(memory_server, "reader") as c:
        events, _ = await c.travel(organization_id="a")
        assert events == []


async def raw_post(server: AthenaServer, head: bytes, body: bytes) -> tuple[int, str, bytes]:
    """POST by hand (``head``: request line and header lines): status, content type, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        length = int(headers.get("content-length", "0"))
        answer = await asyncio.wait_for(reader.readexactly(length), RECV_TIMEOUT)
        return int(lines[0].split()[1]), headers.get("content-type", ""), answer
    finally:
        writer.close()


@pytest.mark.parametrize(
    "key", [b"\xff\xfe", b"s3cr\xc3\xa9t", b"\xe2\x82\xac", b"s3cret\x80"], ids=repr
)
async def test_publish_key_that_is_not_ascii_is_401_json(key: bytes) -> None:
    async with running_server(store="memory", publish_key="s3cret") as srv:
        head = (
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Athena-Key: " + key + b"\r\n"
        )
        status, content, answer = await raw_post(srv, head, b'{"organization_id":"a","payload":1}')
        assert status == 401, answer
        assert content.startswith("application/json")
        assert json.loads(answer)["error"] == "unauthorized"


async def test_non_ascii_publish_key_works_as_utf8() -> None:
    async with running_server(store="memory", publish_key="clé-€") as srv:
        head = (
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Athena-Key: " + "clé-€".encode() + b"\r\n"
        )
        status, _, answer = await raw_post(srv, head, b'{"organization_id":"a","payload":1}')
        assert status == 201, answer


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("flag", "must not be empty"),
        ("env", "must not be empty"),
        ("file", "must not be empty"),
        ("flag-space", "white space"),
    ],
)
def test_empty_publish_key_stops_the_server_naming_the_option(
    tmp_path: Path, how: str, problem: str
) -> None:
    """An empty key must not quietly mean "no key" (publishing open to anyone)."""
    args = [sys.executable, "-m", "athena_cdc", "serve", "--store", "memory", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATHENA_CDC_")}
    named = {
        "flag": "--publish-key",
        "flag-space": "--publish-key",
        "env": "ATHENA_CDC_PUBLISH_KEY",
    }
    if how == "flag":
        args += ["--publish-key", ""]
    elif how == "flag-space":
        args += ["--publish-key", " s3cret"]
    elif how == "env":
        env["ATHENA_CDC_PUBLISH_KEY"] = ""
    else:
        config = tmp_path / "athena.toml"
        config.write_text('publish-key = ""\n')
        args += ["--config", str(config)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    [line] = done.stderr.strip().splitlines()
    assert problem in line and named.get(how, "publish_key") in line, line


async def test_health_and_ready(server: AthenaServer) -> None:
    status, content_type, text = await get(server, "/health")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(text)["status"] == "ok"
    status, content_type, text = await get(server, "/ready")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(text) == {"status": "ready"}


async def test_metrics_page_is_prometheus_text(server: AthenaServer) -> None:
    async with client(server, "m") as c:
        await publish(server, [event("m", i) for i in range(3)])
        await c.recv_events(3)
        await c.travel()
        status, content_type, text = await get(server, "/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        names = {
            line.split("{")[0].split()[0]
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        for name in (
            "athena_cdc_connections_total",
            "athena_cdc_open_connections",
            "athena_cdc_events_delivered_total",
            "athena_cdc_events_replayed_total",
            "athena_cdc_travel_seconds_bucket",
            "athena_cdc_travel_seconds_count",
            "athena_cdc_travel_seconds_sum",
            "athena_cdc_slow_consumer_closes_total",
            "athena_cdc_log_events",
            "athena_cdc_log_bytes",
        ):
            assert name in names, (name, sorted(names))
        assert all(n.startswith("athena_cdc_") for n in names), names
        assert await metric(server, "athena_cdc_open_connections") == 1
        assert await metric(server, "athena_cdc_connections_total") >= 1
        assert await metric(server, "athena_cdc_events_delivered_total") == 3
        assert await metric(server, "athena_cdc_events_replayed_total") == 3
        assert await metric(server, "athena_cdc_travel_seconds_count") == 1
        assert await metric(server, "athena_cdc_slow_consumer_closes_total") == 0
        assert await metric(server, "athena_cdc_log_events") == 3
        assert await metric(server, "athena_cdc_log_channels") == 1
        assert await metric(server, "athena_cdc_log_bytes") > 0


async def test_a_body_that_does_not_match_its_content_encoding_is_400(
    memory_server: AthenaServer,
) -> None:
    status, body = await post_events(
        memory_server, data=b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert (status, body["error"]) == (400, "invalid_body")


async def test_unknown_paths_and_methods_are_answered_in_json(memory_server: AthenaServer) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path, status in (("GET", "/nothing", 404), ("GET", "/events", 405)):
            async with session.request(method, http_url(memory_server, path)) as response:
                assert response.status == status
                assert (await response.json())["error"]


async def expect_continue(server: AthenaServer, length: int, body: bytes = b"") -> list[bytes]:
    """POST with ``Expect: 100-continue``; the status lines received, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length
    )
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = [first.split(b"\r\n", 1)[0]]
    if b" 100 " in lines[0]:
        writer.write(body)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines.append(second.split(b"\r\n", 1)[0])
    writer.close()
    return lines


async def test_expect_continue_refuses_a_too_large_body_before_it_is_sent(
    memory_server: AthenaServer,
) -> None:
    assert await expect_continue(memory_server, 20_000_000) == [
        b"HTTP/1.1 413 Request Entity Too Large"
    ]
    body = b'{"organization_id":"a","payload":1}'
    assert await expect_continue(memory_server, len(body), body) == [
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 201 Created",
    ]
