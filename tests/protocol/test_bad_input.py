"""Bad input: every row of the table, and the connection stays usable after each."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import (
    Client,
    client,
    event,
    publish,
)
from tests.support.servers import running_server


def assert_error(reply: dict[str, Any], code: str, field: str | None = None) -> None:
    keys = ["status", "error", "message"] + (["field"] if field is not None else [])
    assert list(reply) == keys, reply
    assert reply["status"] == "error" and reply["error"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"].strip(), reply
    if field is not None:
        assert reply["field"] == field, reply


async def still_works(server: AthenaServer, c: Client, channel: str = "a") -> None:
    """After an error: ping answers, and a live event still arrives."""
    await c.ping()
    [published] = await publish(server, event(channel, "still here"))
    [got] = await c.recv_events(1)
    assert got["data"]["seq"] == published["seq"] and got["data"]["payload"] == "still here"


TEXT_CASES: list[tuple[str, str, str | None]] = [
    # (frame text, error code, field)
    ("not json", "invalid_json", None),
    ("{", "invalid_json", None),
    ("", "invalid_json", None),
    ("{'type': 'ping'}", "invalid_json", None),
    ('{"type":"ping"} trailing', "invalid_json", None),
    ("NaN", "invalid_json", None),
    ("[]", "invalid_message", None),
    ('[{"type":"ping"}]', "invalid_message", None),
    ("1", "invalid_message", None),
    ('"travel"', "invalid_message", None),
    ("null", "invalid_message", None),
    ("true", "invalid_message", None),
    ("{}", "unknown_type", None),
    ('{"organization_id":"a"}', "unknown_type", None),
    ('{"type":null}', "unknown_type", None),
    ('{"type":"nope"}', "unknown_type", None),
    ('{"type":"TRAVEL"}', "unknown_type", None),
    ('{"type":5}', "unknown_type", None),
    ('{"type":["travel"]}', "unknown_type", None),
    ('{"type":"travel","since_seq":1e400}', "invalid_json", None),
    ('{"type":"travel","since_seq":1e400,"x":12345678901234567890}', "invalid_json", None),
    ('{"type":"travel","limit":Infinity,"x":12345678901234567890}', "invalid_json", None),
    ("[" * 2000 + "]" * 2000, "invalid_json", None),
    (
        '{"type":"ping","x":' + "[" * 2000 + "12345678901234567890" + "]" * 2000 + "}",
        "invalid_json",
        None,
    ),
]

FIELD_CASES: list[tuple[dict[str, Any], str]] = [
    ({"type": "travel", "limit": 0}, "limit"),
    ({"type": "travel", "limit": -1}, "limit"),
    ({"type": "travel", "limit": 1.5}, "limit"),
    ({"type": "travel", "limit": "10"}, "limit"),
    ({"type": "travel", "limit": True}, "limit"),
    ({"type": "travel", "limit": False}, "limit"),
    ({"type": "travel", "limit": [10]}, "limit"),
    ({"type": "travel", "limit": {"n": 1}}, "limit"),
    ({"type": "travel", "since_seq": -1}, "since_seq"),
    ({"type": "travel", "since_seq": "x"}, "since_seq"),
    ({"type": "travel", "since_seq": "5"}, "since_seq"),
    ({"type": "travel", "since_seq": 2.5}, "since_seq"),
    ({"type": "travel", "since_seq": True}, "since_seq"),
    ({"type": "travel", "since_ts_ms": -1}, "since_ts_ms"),
    ({"type": "travel", "since_ts_ms": "1700000000000"}, "since_ts_ms"),
    ({"type": "travel", "since_ts_ms": 1.7e12 + 0.5}, "since_ts_ms"),
    ({"type": "travel", "since_ts_ms": False}, "since_ts_ms"),
    ({"type": "travel", "organization_id": 5}, "organization_id"),
    ({"type": "travel", "organization_id": ""}, "organization_id"),
    ({"type": "travel", "organization_id": ["a"]}, "organization_id"),
    ({"type": "travel", "organization_id": True}, "organization_id"),
    ({"type": "travel", "organization_id": "x" * 257}, "organization_id"),
    ({"type": "travel", "organization_id": "a\u0001b"}, "organization_id"),
    ({"type": "subscribe"}, "organization_id"),
    ({"type": "subscribe", "organization_id": None}, "organization_id"),
    ({"type": "subscribe", "organization_id": 7}, "organization_id"),
    ({"type": "subscribe", "organization_id": ""}, "organization_id"),
    ({"type": "subscribe", "organization_id": "x" * 257}, "organization_id"),
    ({"type": "unsubscribe"}, "organization_id"),
    ({"type": "unsubscribe", "organization_id": {}}, "organization_id"),
    ({"type": "unsubscribe", "organization_id": ""}, "organization_id"),
    ({"subscribe_to_organization_id": 5}, "subscribe_to_organization_id"),
    ({"subscribe_to_organization_id": ""}, "subscribe_to_organization_id"),
    ({"subscribe_to_organization_id": None}, "subscribe_to_organization_id"),
    # Out of range: the logs keep seqs and times as signed 64-bit integers.
    ({"type": "travel", "since_seq": 2**63}, "since_seq"),
    ({"type": "travel", "since_ts_ms": 2**63}, "since_ts_ms"),
    ({"type": "travel", "since_seq": 2**64}, "since_seq"),
    ({"type": "travel", "since_ts_ms": 10**30}, "since_ts_ms"),
    ({"type": "travel", "since_seq": -(10**30)}, "since_seq"),
    ({"type": "travel", "since_ts_ms": 10**4000}, "since_ts_ms"),
    ({"type": "travel", "limit": -(10**30)}, "limit"),
]


@pytest.mark.parametrize(("text", "code", "field"), TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
async def test_bad_text_frame_gets_an_error_and_the_connection_stays_open(
    memory_server: AthenaServer, text: str, code: str, field: str | None
) -> None:
    async with client(memory_server, "a") as c:
        await c.send_raw(text)
        assert_error(await c.recv(), code, field)
        await still_works(memory_server, c)


@pytest.mark.parametrize(
    ("message", "field"), FIELD_CASES, ids=[json.dumps(c[0])[:60] for c in FIELD_CASES]
)
async def test_field_of_wrong_type_or_range_is_invalid_field_naming_it(
    memory_server: AthenaServer, message: dict[str, Any], field: str
) -> None:
    async with client(memory_server, "a") as c:
        await c.send(message)
        assert_error(await c.recv(), "invalid_field", field)
        await still_works(memory_server, c)


async def test_binary_frame_is_invalid_message(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        await c.send_raw(b'{"type":"ping"}')
        assert_error(await c.recv(), "invalid_message")
        await still_works(memory_server, c)


async def test_several_errors_in_a_row_each_get_an_answer(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        for text in ("x", "[]", "{}", '{"type":"travel","limit":0}'):
            await c.send_raw(text)
        codes = [(await c.recv())["error"] for _ in range(4)]
        assert codes == ["invalid_json", "invalid_message", "unknown_type", "invalid_field"]
        await still_works(memory_server, c)


async def test_extra_unknown_fields_are_ignored(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        assert await c.request({"type": "ping", "extra": [1, 2]}) == {"status": "pong"}
        _, ack = await c.travel(colour="blue")
        assert ack["status"] == "travel_complete"


async def test_frame_of_64_kib_is_accepted(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        text = '{"type":"ping"}'
        await c.send_raw(text + " " * (64 * 1024 - len(text)))
        assert await c.recv() == {"status": "pong"}
        await still_works(memory_server, c)


async def test_frame_larger_than_64_kib_closes_with_1009(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        text = '{"type":"ping"}'
        await c.send_raw(text + " " * (64 * 1024 + 1 - len(text)))
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv(within=5)
        assert closed.value.rcvd is not None, "the server must send a close frame"
        assert closed.value.rcvd.code == 1009


async def test_other_clients_are_unaffected_by_a_1009(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as bad, client(memory_server, "a") as good:
        await bad.send_raw("x" * (100 * 1024))
        with pytest.raises(ConnectionClosed):
            await bad.recv(within=5)
        await still_works(memory_server, good)


async def test_rate_limited_when_configured() -> None:
    async with running_server(store="memory", client_rate_limit=5) as srv, client(srv) as c:
        for _ in range(80):
            await c.send({"type": "ping"})
        replies = [await c.recv() for _ in range(80)]
        pongs = [r for r in replies if r == {"status": "pong"}]
        limited = [r for r in replies if r.get("error") == "rate_limited"]
        assert len(pongs) + len(limited) == 80
        assert 50 <= len(pongs) <= 60, replies  # a burst of ten seconds' worth
        for reply in limited:
            assert_error(reply, "rate_limited")
        await asyncio.sleep(1.0)
        await still_works(srv, c)


HUGE = [2**63 - 1, 2**63, 2**64 - 1]


@pytest.mark.parametrize("field", ["since_seq", "since_ts_ms"])
@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("store", ["memory", "sqlite", "sqlite-small-cache"])
async def test_huge_cursor_is_answered_and_the_connection_stays_open(
    tmp_path: Path, store: str, field: str, value: int
) -> None:
    """2**63-1 matches nothing; beyond it (sqlite cannot bind it) it is invalid_field."""
    settings: dict[str, Any] = {"store": store.split("-")[0], "data_dir": str(tmp_path / "d")}
    if store == "sqlite-small-cache":
        settings["memory_limit"] = 16 * 1024  # the travel is answered from disk
    async with running_server(**settings) as srv, client(srv, "a") as c:
        await publish(srv, [event("a", "x" * 200) for _ in range(300)])
        await c.recv_events(300)
        await c.send({"type": "travel", field: value})
        reply = await c.recv()
        if value > 2**63 - 1:
            assert_error(reply, "invalid_field", field)
        else:
            assert reply["status"] == "travel_complete" and reply["count"] == 0, reply
        await still_works(srv, c)


async def test_huge_limit_is_clamped(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        _, ack = await c.travel(limit=2**64 - 1)
        assert ack["limit"] == 50_000


@pytest.mark.parametrize("limit", [2**64, 10**30, 10**4000], ids=["2**64", "10**30", "10**4000"])
async def test_limit_beyond_64_bits_is_clamped_too(memory_server: AthenaServer, limit: int) -> None:
    async with client(memory_server, "a") as c:
        _, ack = await c.travel(limit=limit)
        assert ack["limit"] == 50_000


async def test_out_of_range_cursor_after_a_restart_is_invalid_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a restart the travel reads the disk, where sqlite cannot bind such a number."""
    data_dir = str(tmp_path / "d")
    async with running_server(store="sqlite", data_dir=data_dir) as srv:
        await publish(srv, [event("a", i) for i in range(10)])
    async with running_server(store="sqlite", data_dir=data_dir) as srv, client(srv, "a") as c:
        for field in ("since_seq", "since_ts_ms"):
            for value in (2**63, 2**64 - 1, 2**64, 10**30):
                await c.send({"type": "travel", field: value})
                assert_error(await c.recv(), "invalid_field", field)
            _, ack = await c.travel(**{field: 2**63 - 1})
            assert ack["count"] == 0
        await still_works(srv, c)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
