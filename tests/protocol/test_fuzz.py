"""Fuzzing: no input makes the parsers fail in another way than the protocol's answers.

- A client frame, whatever its bytes, is a client message or a :class:`ProtocolError`.
- A publish body, whatever its bytes, is events to append or a 4xx :class:`PublishError`;
  over HTTP, never a 500.
- Whatever is stored and sent is strict JSON (no ``NaN``/``Infinity``, UTF-8) that means
  what the producer sent: same values, same key order, integers to the last digit,
  floats to the last bit.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena_cdc.protocol import json_values as strict_json
from athena_cdc.protocol.messages import (
    ClientMessage,
    ProtocolError,
    channel_problem,
    parse_client_message,
)
from athena_cdc.sources.http_publish import error_response, parse_events
from athena_cdc.sources.publish_batch import PublishError
from tests.support.servers import http_url, running_server, ws_url

CODES = {"invalid_json", "invalid_message", "unknown_type", "invalid_field"}
# Bounded so the module runs in seconds; CI runs it on every push, so coverage adds up.
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_STRUCTURED = settings(FUZZ, max_examples=100)

# -- strategies ------------------------------------------------------------------------

big_integers = st.integers(min_value=-(10**60), max_value=10**60) | st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**4000, -(10**4000)]
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | big_integers | finite_floats | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)

# Pieces of JSON text, valid and not, to be glued together at random: what a parser
# meets at its edges (numbers past every limit, constants no standard allows, escapes
# of lone surrogates, bytes that are not UTF-8, nesting).
TOKENS = [
    "{", "}", "[", "]", ":", ",", " ", "\n", '"', "\\",
    '"type"', '"travel"', '"ping"', '"subscribe"', '"organization_id"', '"payload"',
    '"since_seq"', '"since_ts_ms"', '"limit"', '"a"', '"\\ud800"', '"\\u0000"', '"\\""',
    "0", "-0", "1", "-1", "1.5", "-0.0", "1e400", "-1e400", "1E+999", "1e-400", "5e-324",
    "1.7976931348623157e308", "12345678901234567890", "-9223372036854775809",
    "18446744073709551615", "9" * 400, "NaN", "Infinity", "-Infinity", "true", "false",
    "null", "nul", "01", "1.", ".5", "0x10", "\u2028", "é",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
byte_soup = st.lists(
    st.sampled_from([t.encode() for t in TOKENS] + [b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00"]),
    max_size=40,
).map(b"".join)
deep = st.builds(
    lambda depth, opener, inner: opener * depth + inner + {"[": "]", "{": "}"}[opener] * depth,
    st.integers(min_value=200, max_value=2500),
    st.sampled_from(["["]),
    st.sampled_from(["", "1", "12345678901234567890", "1e400"]),
)

# -- the client message parser ---------------------------------------------------------


def parse_or_error(data: bytes | str) -> ClientMessage | ProtocolError:
    try:
        return parse_client_message(data)
    except ProtocolError as error:
        return error


def check_client_message(data: bytes | str) -> None:
    result = parse_or_error(data)  # any other exception fails the test
    if isinstance(result, ProtocolError):
        assert result.code in CODES, result.code
        assert strict_loads(result.to_message())["error"] == result.code


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300) | token_soup | byte_soup | deep)
def test_any_client_frame_is_a_message_or_a_protocol_error(data: bytes | str) -> None:
    check_client_message(data)
    if isinstance(data, str):
        check_client_message(data.encode("utf-8", "surrogatepass"))


@FUZZ_STRUCTURED
@given(
    st.dictionaries(
        st.sampled_from(["type", "organization_id", "since_seq", "since_ts_ms", "limit"])
        | st.text(max_size=5),
        st.sampled_from(["travel", "subscribe", "unsubscribe", "ping"]) | json_values,
        max_size=5,
    )
)
def test_any_message_with_any_numbers_is_a_message_or_a_protocol_error(
    message: dict[str, Any],
) -> None:
    """Numbers of any size, anywhere: an out-of-range one is invalid_field, never a crash."""
    result = parse_or_error(json.dumps(message))
    if isinstance(result, ProtocolError):
        assert result.code in CODES, result.code
    for field in ("since_seq", "since_ts_ms"):
        value = message.get(field)
        if message.get("type") == "travel" and type(value) is int and value > 2**63 - 1:
            assert isinstance(result, ProtocolError) and result.code == "invalid_field"


# -- the publish body ------------------------------------------------------------------


def no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: bytes | str) -> Any:
    """What a standard strict parser makes of ``text`` (ValueError if it refuses it)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # strict: no surrogates, no bad bytes
    value = json.loads(text, parse_constant=no_constant)
    if not all_finite(value):
        raise ValueError("a number overflows a double")
    return value


def all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    return True


def canonical(value: Any) -> Any:
    """Comparable exactly: types kept apart (True is not 1), key order kept, floats by bits."""
    if isinstance(value, dict):
        return ("object", [(k, canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [canonical(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("!d", value))
    return (type(value).__name__, value)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) < 0xE000 for c in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def check_publish_body(body: bytes) -> int:
    """parse_events on ``body`` against a strict reference parser; returns the status."""
    try:
        events = parse_events(body)
    except PublishError as error:
        assert 400 <= error.status < 500, error.status
        assert strict_loads(error_response(error).body)["error"] == error.error  # type: ignore[arg-type]
        if error.error == "invalid_json":
            # Refused as JSON only if a strict parser refuses it too, or for the
            # documented limits: nesting, and text that is not Unicode.
            try:
                reference = strict_loads(body)
            except (ValueError, RecursionError):
                return error.status
            assert depth(reference) > 254 or has_lone_surrogate(reference), (body, error)
        return error.status
    reference = strict_loads(body)  # accepted → a strict parser accepts it too
    items = reference if isinstance(reference, list) else [reference]
    assert len(events) == len(items)
    for stored, item in zip(events, items, strict=True):
        assert stored.channel == item["organization_id"]
        assert canonical(strict_loads(stored.payload)) == canonical(item["payload"])
    return 201


def dumps_any(value: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


events_bodies = st.builds(
    lambda channel, payload, extra, batch, ensure_ascii: dumps_any(
        [{"organization_id": channel, "payload": payload, **extra}] * batch
        if batch
        else {"organization_id": channel, "payload": payload, **extra},
        ensure_ascii,
    ),
    st.sampled_from(["a", "b", "", "x" * 257]) | st.text(max_size=5),
    json_values,
    st.dictionaries(st.text(max_size=3), json_values, max_size=2),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
publish_bodies = (
    events_bodies
    | events_bodies.map(lambda b: b.replace(b"1", b"1e400", 1))
    | events_bodies.map(lambda b: b.replace(b"0", b"NaN", 1))
    | st.binary(max_size=200)
    | byte_soup
    | deep.map(lambda d: b'{"organization_id":"a","payload":%b}' % d.encode())
)


@FUZZ
@given(publish_bodies)
def test_any_publish_body_is_events_of_strict_json_or_a_4xx(body: bytes) -> None:
    check_publish_body(body)


@settings(FUZZ, max_examples=300)
@given(finite_floats, st.booleans())
def test_floats_round_trip_to_the_last_bit(number: float, exact_path: bool) -> None:
    """On both decoding paths (a 20-digit run anywhere takes the exact one)."""
    payload = [number, "12345678901234567890"] if exact_path else [number]
    [stored] = parse_events(dumps_any({"organization_id": "a", "payload": payload}, True))
    assert canonical(strict_loads(stored.payload)) == canonical(payload)


@FUZZ_STRUCTURED
@given(json_values)
def test_integers_keep_every_digit(payload: Any) -> None:
    body = dumps_any({"organization_id": "a", "payload": payload}, False)
    [stored] = parse_events(body)
    assert canonical(strict_loads(stored.payload)) == canonical(payload)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"[18446744073709551616]", "18446744073709551616"),  # 2**64: 20 digits
        (b"[-9223372036854775809]", "-9223372036854775809"),  # below -2**63: minus and 19
        (b'{"pad":"x y","n":123456789012345678901234}', "123456789012345678901234"),
        (b'["1234567890123456789", 99999999999999999999]', "99999999999999999999"),
    ],
)
def test_a_body_with_a_run_of_19_digits_is_read_exactly(body: bytes, text: str) -> None:
    """The quick look for long digit runs (before the regex) finds them wherever they are."""
    found = strict_json.loads(body)
    values = found.values() if isinstance(found, dict) else found
    assert [v.text for v in values if isinstance(v, strict_json.BigInteger)] == [text]


def test_a_body_with_18_digit_runs_only_is_read_as_plain_values() -> None:
    assert strict_json.loads(b'[123456789012345678, "-123456789012345678"]') == [
        123456789012345678,
        "-123456789012345678",
    ]


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("tenant-42 a/b", True),  # printable ASCII: the quick check in C
        ("é", True),
        ("a\xa0b", True),
        ("a\x00", False),
        ("a\x1f", False),
        ("a\x7f", False),
        ("é\x01", False),  # not ASCII: the character-by-character check
        ("é\x9f", False),
        ("é\ud800", False),
    ],
)
def test_a_channel_name_with_a_control_character_is_refused_on_either_path(
    name: str, allowed: bool
) -> None:
    assert (channel_problem(name) is None) is allowed


# -- over HTTP -------------------------------------------------------------------------


async def post_all_and_read_back(bodies: list[bytes]) -> None:
    async with running_server(store="memory") as server, aiohttp.ClientSession() as http:
        accepted: list[bytes] = []
        for body in bodies:
            async with http.post(
                http_url(server, "/events"),
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status < 500, (body, await response.text())
                assert response.content_type == "application/json"
                assert response.status == check_publish_body(body), body
                if response.status == 201:
                    accepted.append(body)
        async with http.ws_connect(ws_url(server), headers={"X-Athena-Client": "fuzz"}) as ws:
            await ws.receive_str()  # subscribed
            sent = [
                e
                for body in accepted
                for e in (lambda r: r if isinstance(r, list) else [r])(strict_loads(body))
            ]
            channels = sorted({e["organization_id"] for e in sent})
            received: list[Any] = []
            for channel in channels:
                await ws.send_str(json.dumps({"type": "travel", "organization_id": channel}))
                while True:
                    message = strict_loads(await ws.receive_str())  # strict, every frame
                    if message.get("status") == "travel_complete":
                        break
                    received.append(message)
            by_channel = {
                c: [e["payload"] for e in sent if e["organization_id"] == c] for c in channels
            }
            got = {
                c: [m["data"]["payload"] for m in received if m["organization_id"] == c]
                for c in channels
            }
            assert canonical(got) == canonical(by_channel)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(publish_bodies, min_size=15, max_size=15))
def test_posted_bodies_are_201_or_4xx_and_read_back_strict(bodies: list[bytes]) -> None:
    asyncio.run(post_all_and_read_back(bodies))


def test_a_text_message_parses_exactly_as_its_utf8_bytes() -> None:
    # WebSocket text arrives as str and is checked as its UTF-8 bytes: big integers keep
    # every digit either way, and a lone surrogate (which no UTF-8 text can hold) is
    # refused, not passed on.
    jv = strict_json
    text = '{"n":123456789012345678901234567890,"m":-1234567890123456789012,"s":"é"}'
    assert jv.loads(text) == jv.loads(text.encode())
    assert jv.loads(text)["n"] == jv.BigInteger("123456789012345678901234567890")
    with pytest.raises(jv.JsonError, match="not UTF-8"):
        jv.loads('{"s":"\ud800"}')
