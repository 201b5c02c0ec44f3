"""Client → server message parsing and server → client message building.

Pure functions, no I/O: the WebSocket handler feeds them bytes and writes what they
return. Every rejection is a :class:`ProtocolError` carrying the error code of the
protocol's bad-input table, so the handler answers it and keeps the connection open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from athena_cdc.protocol import json_values

DEFAULT_TRAVEL_LIMIT = 10_000
MAX_TRAVEL_LIMIT = 50_000
MAX_CHANNEL_LENGTH = 256
# Cursors are compared with seqs and times that the logs keep as signed 64-bit integers
# (sqlite cannot even bind a larger one); no real seq or ts_ms comes near this.
MAX_CURSOR = 2**63 - 1


class ProtocolError(Exception):
    """A client message the server will not act on; answered with an error message."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_message(self) -> bytes:
        return error_message(self.code, self.message, self.field)


# -- client messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Travel:
    organization_id: str | None
    since_seq: int | None
    since_ts_ms: int | None
    limit: int  # effective, after default and clamp


@dataclass(frozen=True, slots=True)
class Subscribe:
    organization_id: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    organization_id: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new token for the connection (auth on): replaces the one in force."""

    token: str = field(repr=False)  # never in a log line


@dataclass(frozen=True, slots=True)
class Publish:
    """Events to append (extension): validated by the rules POST /events follows
    (:mod:`athena_cdc.sources.publish_batch`), not here."""

    id_json: bytes | None  # the client's correlation id, as JSON, echoed in the answer
    events: Any  # one event object or an array of them, as parsed; None when absent


ClientMessage = Travel | Subscribe | Unsubscribe | Ping | Refresh | Publish

MAX_TOKEN_LENGTH = 8 * 1024
MAX_ID_LENGTH = 256
MESSAGE_TYPES = "travel, subscribe, unsubscribe, ping, refresh, publish"


def parse_client_message(data: bytes | str) -> ClientMessage:
    """Parse one text frame from a client, or raise :class:`ProtocolError`."""
    try:
        obj = json_values.loads(data)
    except json_values.JsonError:
        raise ProtocolError("invalid_json", "The message is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_message", "A message must be a JSON object.")
    kind = obj.get("type")
    if kind is None and "subscribe_to_organization_id" in obj:
        # The original document's legacy form of subscribe.
        return Subscribe(_required_channel(obj, "subscribe_to_organization_id"))
    if kind == "publish":  # first: the producers' hot path
        return Publish(_publish_id(obj), obj.get("events"))
    if kind == "travel":
        return _parse_travel(obj)
    if kind == "subscribe":
        return Subscribe(_required_channel(obj, "organization_id"))
    if kind == "unsubscribe":
        return Unsubscribe(_required_channel(obj, "organization_id"))
    if kind == "ping":
        return Ping()
    if kind == "refresh":
        token = obj.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(
                "invalid_field",
                f'"token" must be a JWT string of at most {MAX_TOKEN_LENGTH} characters.',
                "token",
            )
        return Refresh(token)
    if kind is None:
        raise ProtocolError(
            "unknown_type",
            f'The message has no "type"; use one of {MESSAGE_TYPES}.',
        )
    raise ProtocolError(
        "unknown_type",
        f"Unknown message type {_short(kind)}; use one of {MESSAGE_TYPES}.",
    )


def _parse_travel(obj: dict[str, Any]) -> Travel:
    channel = _channel(obj, "organization_id")
    since_seq = _non_negative_int(obj, "since_seq")
    since_ts_ms = _non_negative_int(obj, "since_ts_ms")
    limit = DEFAULT_TRAVEL_LIMIT
    raw_limit = obj.get("limit")
    if raw_limit is not None:
        if isinstance(raw_limit, json_values.BigInteger) and not raw_limit.negative:
            raw_limit = MAX_TRAVEL_LIMIT  # any size is clamped; this one is beyond 64 bits
        if not _is_int(raw_limit) or raw_limit < 1:
            raise ProtocolError(
                "invalid_field", '"limit" must be an integer of at least 1.', "limit"
            )
        limit = min(raw_limit, MAX_TRAVEL_LIMIT)
    return Travel(channel, since_seq, since_ts_ms, limit)


def _publish_id(obj: dict[str, Any]) -> bytes | None:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH and not channel_problem(value):
        return orjson.dumps(value)
    if _is_int(value) and 0 <= value <= MAX_CURSOR:
        return b"%d" % value
    raise ProtocolError(
        "invalid_field",
        f'"id" must be an integer from 0 to {MAX_CURSOR} or a string of 1 to '
        f"{MAX_ID_LENGTH} printable characters.",
        "id",
    )


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, a subclass of int: not a number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative_int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_CURSOR:
        raise ProtocolError(
            "invalid_field", f'"{name}" must be an integer from 0 to {MAX_CURSOR}.', name
        )
    assert isinstance(value, int)
    return value


def _required_channel(obj: dict[str, Any], name: str) -> str:
    channel = _channel(obj, name)
    if channel is None:
        raise ProtocolError("invalid_field", f'"{name}" is required.', name)
    return channel


def _channel(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    problem = channel_problem(value) if isinstance(value, str) else "must be a string"
    if problem:
        raise ProtocolError("invalid_field", f'"{name}" {problem}.', name)
    assert isinstance(value, str)
    return value


def channel_problem(name: str) -> str | None:
    """Why ``name`` cannot be a channel / client name, or None if it can."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_CHANNEL_LENGTH:
        return f"must be at most {MAX_CHANNEL_LENGTH} characters"
    if name.isascii() and name.isprintable():
        return None  # the common case, checked in C: no control character, no surrogate
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return "must not contain control characters"
    if any(0xD800 <= ord(c) < 0xE000 for c in name):
        return "must be valid UTF-8"  # lone surrogates: bytes that were not UTF-8
    return None


def _short(value: object) -> str:
    try:
        text = json_values.dumps(value).decode()
    except json_values.JsonError:  # a lone surrogate, or nested too deep
        text = ascii(value[:40]) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


# -- server messages ----------------------------------------------------------------


def encode_event(channel: str, seq: int, ts_ms: int, payload: bytes) -> bytes:
    """``{"organization_id":..,"data":{"seq":..,"ts_ms":..,"payload":..}}``, keys in order.

    ``payload`` is already JSON; it is spliced in, never decoded again.
    """
    return b'{"organization_id":%b,"data":{"seq":%d,"ts_ms":%d,"payload":%b}}' % (
        orjson.dumps(channel),
        seq,
        ts_ms,
        payload,
    )


def subscribed_message(
    client_id: str,
    channel: str | None = None,
    *,
    epoch: str | None = None,
    expires_at_ms: int | None = None,
) -> bytes:
    body: dict[str, Any]
    if channel is None:
        body = {
            "status": "subscribed",
            "client_id": client_id,
            "message": "Subscribed via X-Athena-Client header",
        }
    else:
        body = {"status": "subscribed", "client_id": client_id, "organization_id": channel}
    if epoch is not None:
        body["epoch"] = epoch  # extension, after the original keys
    if expires_at_ms is not None:  # auth on: when the token in force expires
        body["expires_at_ms"] = expires_at_ms
    return orjson.dumps(body)


def unsubscribed_message(client_id: str, channel: str, reason: str | None = None) -> bytes:
    body = {"status": "unsubscribed", "client_id": client_id, "organization_id": channel}
    if reason is not None:  # e.g. "forbidden": a refreshed token no longer covers it
        body["reason"] = reason
    return orjson.dumps(body)


def refreshed_message(expires_at_ms: int) -> bytes:
    return orjson.dumps({"status": "refreshed", "expires_at_ms": expires_at_ms})


def forbidden_message(channel: str) -> bytes:
    return orjson.dumps(
        {
            "status": "error",
            "error": "forbidden",
            "message": f"Your token does not allow reading {channel!r}.",
            "organization_id": channel,
        }
    )


PONG_MESSAGE = b'{"status":"pong"}'


def published_message(id_json: bytes | None, acks: bytes) -> bytes:
    """``{"status":"published","id":..,"events":[acks]}``: ``acks`` is already JSON."""
    return b'{"status":"published","id":%b,"events":[%b]}' % (id_json or b"null", acks)


def publish_error_message(id_json: bytes | None, body: dict[str, Any]) -> bytes:
    """A refused publish: POST /events' error body, as an error message with the id."""
    return b'{"status":"error","id":%b,%b' % (id_json or b"null", orjson.dumps(body)[1:])


def error_message(code: str, message: str, field: str | None = None) -> bytes:
    body: dict[str, str] = {"status": "error", "error": code, "message": message}
    if field is not None:
        body["field"] = field
    return orjson.dumps(body)


def travel_complete_message(
    travel: Travel,
    *,
    count: int,
    has_more: bool,
    gaps: list[dict[str, Any]],
    epoch: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "status": "travel_complete",
        "organization_id": travel.organization_id,
        "since_seq": travel.since_seq,
        "since_ts_ms": travel.since_ts_ms,
        "limit": travel.limit,
        "count": count,
        "has_more": has_more,
        "gaps": gaps,
    }
    if epoch is not None:
        body["epoch"] = epoch
    return orjson.dumps(body)
