"""``POST /events``: producers publish events over HTTP.

One event ``{"organization_id": "X", "payload": <json>}`` or a JSON array of them.
All or nothing: every event is validated before any is appended, and the batch is
appended atomically. The 201 answer is sent only once the events are durable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from athena_cdc.auth.guard import Guard, Refused
from athena_cdc.log.base import EventLog, NewEvent, StorageUnavailable
from athena_cdc.metrics import Metrics
from athena_cdc.protocol.messages import channel_problem

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10_000


class PublishError(Exception):
    def __init__(self, status: int, error: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.index = index

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        response = web.Response(
            body=orjson.dumps(body), status=self.status, content_type="application/json"
        )
        if self.status == 413:
            # The unread rest of the body would otherwise keep the connection busy
            # (and a draining server waiting for it).
            response.force_close()
        return response


# orjson reads integers exactly from -2**63 to 2**64-1 and silently turns anything
# beyond into a float. 20 digits, or a minus and 19, may be beyond: such bodies (rare;
# nanosecond timestamps and snowflake ids have 19 digits) take the exact path of the
# standard library.
_LONG_NUMBER = re.compile(rb"\d{20}|-\d{19}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _decode(body: bytes) -> tuple[Any, Callable[[Any], bytes]]:
    """The body's JSON, and the encoder that gives its values back exactly."""
    if not _LONG_NUMBER.search(body):
        return orjson.loads(body), orjson.dumps
    return json.loads(body, parse_constant=_reject_constant), _exact_dumps


def _exact_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def parse_events(body: bytes) -> list[NewEvent]:
    """Validate a request body into events to append, or raise :class:`PublishError`."""
    try:
        data, dumps = _decode(body)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson's error is a ValueError
        raise PublishError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
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
        try:
            payload = dumps(item["payload"])
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise PublishError(400, "invalid_json", f"{where}payload: {exc}", at) from None
        events.append(NewEvent(channel, payload))
    return events


class PublishEndpoint:
    def __init__(self, event_log: EventLog, metrics: Metrics, guard: Guard) -> None:
        self.log = event_log
        self.metrics = metrics
        self.guard = guard

    async def handle(self, request: web.Request) -> web.Response:
        try:
            response = await self._publish(request)
        except PublishError as error:
            response = error.response()
        self.metrics.publish_requests.labels(str(response.status)).inc()
        return response

    async def _publish(self, request: web.Request) -> web.Response:
        try:
            allowed = self.guard.publisher(request.headers)  # before reading the body
        except Refused as refused:
            raise PublishError(refused.status, refused.error, refused.message) from None
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        if len(body) > MAX_BODY_BYTES:  # a chunked body has no Content-Length to check
            raise _too_large()
        events = parse_events(body)
        try:
            self.guard.check_publish(allowed, (event.channel for event in events))
        except Refused as refused:
            raise PublishError(refused.status, refused.error, refused.message) from None
        try:
            appended = await self.log.append(events)
        except StorageUnavailable as exc:
            raise PublishError(
                503, "unavailable", f"The event log cannot take writes: {exc}. Retry later."
            ) from None
        return web.Response(
            body=b'{"events":[%b]}'
            % b",".join(
                b'{"organization_id":%b,"seq":%d,"ts_ms":%d}'
                % (orjson.dumps(e.channel), e.seq, e.ts_ms)
                for e in appended
            ),
            status=201,
            content_type="application/json",
        )


def _too_large() -> PublishError:
    return PublishError(
        413,
        "body_too_large",
        f"The body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB; split it into "
        "several requests.",
    )
