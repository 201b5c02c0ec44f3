"""The rules of a publish, whatever carries it: ``POST /events`` or a WebSocket ``publish``.

One event ``{"organization_id": "X", "payload": <json>}`` or a JSON array of them. All
or nothing: every event is validated, and every channel allowed, before any is
appended, and the batch is appended atomically; the acks are sent only once the events
are durable. Each refusal is a :class:`PublishError` carrying the HTTP status, error
code and message that both transports answer with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from athena_cdc.auth.guard import Guard, Refused
from athena_cdc.auth.permissions import EVERYTHING, ChannelPatterns
from athena_cdc.log.base import Event, EventLog, NewEvent, StorageUnavailable
from athena_cdc.protocol import json_values
from athena_cdc.protocol.messages import channel_problem

MAX_EVENTS_PER_REQUEST = 10_000


class PublishError(Exception):
    def __init__(self, status: int, error: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.index = index

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        return body

    @classmethod
    def refused(cls, refused: Refused) -> PublishError:
        return cls(refused.status, refused.error, refused.message)


def invalid_json(exc: json_values.JsonError) -> PublishError:
    return PublishError(400, "invalid_json", f"The body is not valid JSON: {exc}")


def events_from_json(data: Any) -> list[NewEvent]:
    """Validate parsed JSON (one event or an array) into events, or raise PublishError."""
    items = data if isinstance(data, list) else [data]
    single = not isinstance(data, list)
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise PublishError(
            413,
            "too_many_events",
            f"{len(items)} events in one request; at most {MAX_EVENTS_PER_REQUEST}. "
            "Split the array into several requests.",
        )
    events: list[NewEvent] = []
    for index, item in enumerate(items):
        where = "" if single else f"event {index}: "
        at = None if single else index
        if not isinstance(item, dict):
            raise PublishError(
                400,
                "invalid_event",
                f'{where}an event must be an object {{"organization_id": ..., "payload": ...}}.',
                at,
            )
        channel = item.get("organization_id")
        if not isinstance(channel, str):
            raise PublishError(
                400, "invalid_event", f'{where}"organization_id" must be a string.', at
            )
        problem = channel_problem(channel)
        if problem:
            raise PublishError(400, "invalid_event", f'{where}"organization_id" {problem}.', at)
        if "payload" not in item:
            raise PublishError(400, "invalid_event", f'{where}"payload" is required.', at)
        payload = b""
        for key, value in item.items():
            # Other keys are ignored, but held to the same depth as the payload, so
            # that no body nested deeper than MAX_DEPTH + 2 levels is ever accepted.
            if key == "organization_id":
                continue
            try:
                encoded = json_values.dumps(value)
            except json_values.JsonError as exc:
                raise PublishError(
                    400, "invalid_json", f"{where}{clip(repr(key))}: {exc}", at
                ) from None
            if key == "payload":
                payload = encoded
        events.append(NewEvent(channel, payload))
    return events


def check_allowed(guard: Guard, allowed: ChannelPatterns, events: Sequence[NewEvent]) -> None:
    """Every channel of the batch allowed, or PublishError (403) and nothing appended."""
    if allowed is EVERYTHING:
        return  # auth off, or the publish key: nothing to check per channel
    try:
        guard.check_publish(allowed, (event.channel for event in events))
    except Refused as refused:
        raise PublishError.refused(refused) from None


async def append(event_log: EventLog, events: Sequence[NewEvent]) -> list[Event]:
    """Append the batch; return once it is durable (PublishError 503 if it cannot be)."""
    try:
        return await event_log.append(events)
    except StorageUnavailable as exc:
        raise unavailable(exc) from None


def unavailable(exc: StorageUnavailable) -> PublishError:
    return PublishError(
        503, "unavailable", f"The event log cannot take writes: {exc}. Retry later."
    )


def acks(appended: Sequence[Event]) -> bytes:
    """``{"organization_id":..,"seq":..,"ts_ms":..}`` per event, comma-separated."""
    return b",".join(
        b'{"organization_id":%b,"seq":%d,"ts_ms":%d}' % (orjson.dumps(e.channel), e.seq, e.ts_ms)
        for e in appended
    )


def clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
