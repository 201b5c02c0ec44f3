"""Connecting: the client name, the 400 answers, the ``subscribed`` message."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import UPGRADE_HEAD, client, publish, raw_request, read_frame

MISSING = "Missing X-Athena-Client header"


def assert_json_400(status: int, headers: dict[str, str], body: bytes) -> dict[str, str]:
    assert status == 400, (status, body)
    assert headers["content-type"].split(";")[0].strip() == "application/json", headers
    answer = json.loads(body)
    assert isinstance(answer, dict)
    for key in ("error", "message", "hint"):
        assert isinstance(answer.get(key), str) and answer[key], answer
    return answer


async def upgrade(
    server: AthenaServer, extra: bytes, path: str = "/ws"
) -> tuple[int, dict[str, str], bytes, str | None]:
    """A hand-made upgrade: status, headers, body, and the first message if upgraded."""
    response = await raw_request(server.port, path, extra)
    try:
        first = None
        if response.status == 101:
            with contextlib.suppress(asyncio.IncompleteReadError):
                opcode, payload = await read_frame(response.reader)
                assert opcode == 1
                first = payload.decode()
        return response.status, response.headers, response.body, first
    finally:
        response.close()


async def test_missing_header_is_400_json_with_error_message_and_hint(
    memory_server: AthenaServer,
) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"")
    answer = assert_json_400(status, headers, body)
    assert answer["error"] == MISSING
    assert "X-Athena-Client" in answer["hint"]
    assert "ws://" in answer["hint"] and "wss://" in answer["hint"]


@pytest.mark.parametrize("value", [b"", b"   ", b"\t \t"])
async def test_header_empty_after_trimming_counts_as_missing(
    memory_server: AthenaServer, value: bytes
) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"X-Athena-Client: " + value + b"\r\n")
    assert assert_json_400(status, headers, body)["error"] == MISSING


@pytest.mark.parametrize(
    "spelling", [b"X-Athena-Client", b"x-athena-client", b"X-ATHENA-CLIENT", b"x-AtHeNa-cLiEnT"]
)
async def test_header_name_is_case_insensitive(
    memory_server: AthenaServer, spelling: bytes
) -> None:
    status, _, _, first = await upgrade(memory_server, spelling + b": acme\r\n")
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "acme"


async def test_header_value_is_trimmed(memory_server: AthenaServer) -> None:
    status, _, _, first = await upgrade(memory_server, b"X-Athena-Client: \t  acme corp \t \r\n")
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "acme corp"


async def test_subscribed_message_exact_form_and_key_order(memory_server: AthenaServer) -> None:
    status, _, _, first = await upgrade(memory_server, b"X-Athena-Client: athena_logging\r\n")
    assert status == 101
    assert first == (
        '{"status":"subscribed","client_id":"athena_logging",'
        f'"message":"Subscribed via X-Athena-Client header","epoch":"{memory_server.log.epoch}"}}'
    )


async def test_subscribed_message_keeps_unicode_name(memory_server: AthenaServer) -> None:
    name = "équipe-ü-日本"
    status, _, _, first = await upgrade(
        memory_server, b"X-Athena-Client: " + name.encode() + b"\r\n"
    )
    assert status == 101
    assert first is not None
    assert list(json.loads(first).items()) == [
        ("status", "subscribed"),
        ("client_id", name),
        ("message", "Subscribed via X-Athena-Client header"),
        ("epoch", memory_server.log.epoch),
    ]


async def test_name_of_256_characters_is_accepted(memory_server: AthenaServer) -> None:
    name = "n" * 256
    status, _, _, first = await upgrade(memory_server, f"X-Athena-Client: {name}\r\n".encode())
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == name


async def test_name_longer_than_256_characters_is_400_with_another_error(
    memory_server: AthenaServer,
) -> None:
    status, headers, body, _ = await upgrade(
        memory_server, b"X-Athena-Client: " + b"n" * 257 + b"\r\n"
    )
    assert assert_json_400(status, headers, body)["error"] not in ("", MISSING)


async def test_name_with_a_tab_inside_is_400_with_another_error(
    memory_server: AthenaServer,
) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"X-Athena-Client: a\tb\r\n")
    assert assert_json_400(status, headers, body)["error"] not in ("", MISSING)


@pytest.mark.parametrize("char", [b"\x01", b"\x1b", b"\x7f"])
async def test_name_with_control_characters_in_header_is_400_json(
    memory_server: AthenaServer, char: bytes
) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"X-Athena-Client: a" + char + b"b\r\n")
    assert assert_json_400(status, headers, body)["error"] not in ("", MISSING)


@pytest.mark.parametrize("encoded", ["a%01b", "a%1Bb", "a%7Fb", "a%C2%85b", "a%0Ab"])
async def test_name_with_control_characters_in_query_is_400_json(
    memory_server: AthenaServer, encoded: str
) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"", path=f"/ws?client={encoded}")
    assert assert_json_400(status, headers, body)["error"] not in ("", MISSING)


async def test_name_that_is_not_utf8_is_400_json(memory_server: AthenaServer) -> None:
    # A lone continuation byte cannot be echoed back as a JSON client_id.
    status, headers, body, _ = await upgrade(memory_server, b"X-Athena-Client: a\x85b\r\n")
    assert assert_json_400(status, headers, body)["error"] not in ("", MISSING)


async def test_query_parameter_is_used_when_header_absent(memory_server: AthenaServer) -> None:
    status, _, _, first = await upgrade(memory_server, b"", path="/ws?client=browser%20app")
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "browser app"


async def test_query_parameter_is_used_when_header_empty(memory_server: AthenaServer) -> None:
    status, _, _, first = await upgrade(
        memory_server, b"X-Athena-Client:   \r\n", path="/ws?client=browser"
    )
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "browser"


async def test_header_wins_over_query_parameter(memory_server: AthenaServer) -> None:
    status, _, _, first = await upgrade(
        memory_server, b"X-Athena-Client: from-header\r\n", path="/ws?client=from-query"
    )
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "from-header"


async def test_empty_query_parameter_without_header_is_missing(memory_server: AthenaServer) -> None:
    status, headers, body, _ = await upgrade(memory_server, b"", path="/ws?client=%20")
    assert assert_json_400(status, headers, body)["error"] == MISSING


async def test_subscribed_to_exactly_the_client_name_channel(memory_server: AthenaServer) -> None:
    async with client(memory_server, "acme") as c:
        await publish(
            memory_server,
            [
                {"organization_id": "other", "payload": 1},
                {"organization_id": "acme", "payload": 2},
                {"organization_id": "acme-2", "payload": 3},
                {"organization_id": "ACME", "payload": 4},
            ],
        )
        [only] = await c.recv_events(1)
        assert only["organization_id"] == "acme" and only["data"]["payload"] == 2
        await c.expect_silence()
        # A travel without organization_id covers the subscribed channels: only "acme".
        events, ack = await c.travel()
        assert [e["organization_id"] for e in events] == ["acme"]
        assert ack["count"] == 1


async def test_trimmed_name_is_the_channel(memory_server: AthenaServer) -> None:
    async with client(memory_server, "  padded  ") as c:
        await publish(memory_server, {"organization_id": "padded", "payload": "x"})
        [got] = await c.recv_events(1)
        assert got["organization_id"] == "padded"


async def test_get_ws_without_upgrade_is_426_json(memory_server: AthenaServer) -> None:
    response = await raw_request(
        memory_server.port, "/ws", b"X-Athena-Client: a\r\n", upgrade=False
    )
    response.close()
    assert response.status == 426
    assert response.headers["content-type"].split(";")[0] == "application/json"
    answer = response.json()
    assert isinstance(answer["error"], str) and answer["error"]
    assert isinstance(answer["message"], str) and answer["message"]


@pytest.mark.parametrize("encoded", ["a%ffb", "%ff", "a%C3", "%ED%A0%80", "%C0%80"])
async def test_query_name_that_is_not_utf8_after_percent_decoding_is_400_json(
    memory_server: AthenaServer, encoded: str
) -> None:
    # Decoded as strictly as the header: not a U+FFFD in the client name.
    status, headers, body, _ = await upgrade(memory_server, b"", path=f"/ws?client={encoded}")
    assert assert_json_400(status, headers, body)["error"] == "Invalid X-Athena-Client header"


async def test_bad_query_name_does_not_matter_when_the_header_names_the_client(
    memory_server: AthenaServer,
) -> None:
    status, _, _, first = await upgrade(
        memory_server, b"X-Athena-Client: from-header\r\n", path="/ws?client=a%ffb"
    )
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == "from-header"


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("x=%ff&client=ok", "ok"),  # another parameter's bytes are not the name's business
        ("client=first&client=%ff", "first"),  # the first one counts, as before
        ("client=a+b%20c", "a b c"),  # '+' is a space, as in any query string
        ("client=%E2%9C%93", "\u2713"),
    ],
)
async def test_query_name_is_decoded_like_a_query_string(
    memory_server: AthenaServer, query: str, name: str
) -> None:
    status, _, _, first = await upgrade(memory_server, b"", path=f"/ws?{query}")
    assert status == 101
    assert first is not None and json.loads(first)["client_id"] == name


@pytest.mark.parametrize(
    "header",
    [
        b"X-Athena-Client",
        b"Sec-WebSocket-Key",
        b"Sec-WebSocket-Version",
        b"Sec-WebSocket-Protocol",
        b"Sec-WebSocket-Extensions",
        b"Upgrade",
        b"Connection",
        b"Origin",
        b"User-Agent",
        b"X-Something-Else",
    ],
)
async def test_header_value_that_is_not_utf8_never_gets_a_500(
    memory_server: AthenaServer, header: bytes
) -> None:
    # The upgrade's own lines, with this header's value (or a new one) made of \xff\xfe.
    lines = [
        line
        for line in UPGRADE_HEAD.split(b"\r\n")
        if line and not line.lower().startswith((b"host:", header.lower() + b":"))
    ]
    if header != b"X-Athena-Client":
        lines.append(b"X-Athena-Client: a")
    lines.append(header + b": \xff\xfe")
    response = await raw_request(
        memory_server.port, "/ws", b"".join(line + b"\r\n" for line in lines), upgrade=False
    )
    response.close()
    if header == b"X-Athena-Client":
        assert_json_400(response.status, response.headers, response.body)
    elif response.status != 101:
        assert response.status in (400, 426), (response.status, response.body)
        assert response.headers["content-type"].split(";")[0] == "application/json"
