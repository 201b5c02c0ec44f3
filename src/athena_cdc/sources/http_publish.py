"""``POST /events``: producers publish events over HTTP.

One event ``{"organization_id": "X", "payload": <json>}`` or a JSON array of them.
All or nothing: every event is validated before any is appended, and the batch is
appended atomically. The 201 answer is sent only once the events are durable.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import _default_expect_handler

from athena_cdc.auth.guard import KEY_HEADER, Guard, Refused
from athena_cdc.log.base import EventLog, NewEvent, StorageUnavailable
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import json_values
from athena_cdc.protocol.messages import channel_problem

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10_000
# Only this media type: a web page can POST text/plain, form and multipart bodies to any
# origin without asking (no CORS preflight), so accepting them would let any page publish
# through a visitor's browser. JSON is UTF-8 (RFC 8259): another charset is refused too.
MEDIA_TYPE = "application/json"


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


def parse_events(body: bytes) -> list[NewEvent]:
    """Validate a request body into events to append, or raise :class:`PublishError`."""
    try:
        data = json_values.loads(body)
    except json_values.JsonError as exc:
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
                    400, "invalid_json", f"{where}{_clip(repr(key))}: {exc}", at
                ) from None
            if key == "payload":
                payload = encoded
        events.append(NewEvent(channel, payload))
    return events


class PublishEndpoint:
    def __init__(self, event_log: EventLog, metrics: Metrics, guard: Guard) -> None:
        self.log = event_log
        self.metrics = metrics
        self.guard = guard
        # The counter of each status answered: ``labels()`` takes a lock and builds a
        # key on every call, several microseconds that each publish would pay.
        self._answered: dict[int, Any] = {}

    def _count(self, status: int) -> None:
        counter = self._answered.get(status)
        if counter is None:
            counter = self._answered[status] = self.metrics.publish_requests.labels(str(status))
        counter.inc()

    async def expect(self, request: web.Request) -> web.Response | None:
        """``Expect: 100-continue``: refuse a body that is too large before the client
        sends it; otherwise invite it as aiohttp does (its handler, private: aiohttp is
        pinned, and tests/protocol/test_publish.py covers both answers)."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            response = _too_large().response()
            response.force_close()
            self._count(response.status)
            return response
        await _default_expect_handler(request)
        return None

    async def handle(self, request: web.Request) -> web.Response:
        try:
            response = await self._publish(request)
        except PublishError as error:
            response = error.response()
            if request.can_read_body:
                # Refused before the body was read: reading it now would only help a
                # client that should not be sending it.
                response.force_close()
        self._count(response.status)
        return response

    async def _publish(self, request: web.Request) -> web.Response:
        try:
            # Before the body is read. The key is compared as the bytes sent (its text
            # need not be UTF-8), and looked for only when one is configured.
            key = _raw_header(request, KEY_HEADER) if self.guard.publish_key is not None else b""
            allowed = self.guard.publisher(request.headers, key)
        except Refused as refused:
            raise PublishError(refused.status, refused.error, refused.message) from None
        if not _is_json(request):
            raise PublishError(
                415,
                "unsupported_media_type",
                f"Send the body as JSON with the header 'Content-Type: {MEDIA_TYPE}' "
                f"(got {_clip(request.headers.get('Content-Type', 'none'))!r}).",
            )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not
            raise PublishError(
                400, "invalid_body", f"The body could not be read: {_clip(str(exc))}"
            ) from None
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


def _is_json(request: web.Request) -> bool:
    charset = (request.charset or "utf-8").lower()
    return request.content_type == MEDIA_TYPE and charset in ("utf-8", "utf8")


def _raw_header(request: web.Request, name: str) -> bytes:
    """A header's bytes as sent (its text need not be UTF-8; compare_digest takes bytes)."""
    wanted = name.lower().encode()
    for key, value in request.raw_headers:
        if key.lower() == wanted:
            return value
    return b""


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _too_large() -> PublishError:
    return PublishError(
        413,
        "body_too_large",
        f"The body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB; split it into "
        "several requests.",
    )
