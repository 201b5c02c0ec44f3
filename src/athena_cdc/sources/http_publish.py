"""``POST /events``: producers publish events over HTTP.

The body is one event or a JSON array of them; the rules of a batch (validation, all
or nothing, durable before the answer) are :mod:`athena_cdc.sources.publish_batch`'s,
shared with the WebSocket ``publish`` message. This module owns what is HTTP's: the
media type, the body size bound, the headers and the status codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import _default_expect_handler

from athena_cdc.auth.guard import KEY_HEADER, Guard, Refused
from athena_cdc.auth.permissions import ChannelPatterns
from athena_cdc.log.base import Event, EventLog, NewEvent
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import json_values
from athena_cdc.sources import publish_batch
from athena_cdc.sources.publish_batch import (
    PublishError,
    clip,
    events_from_json,
    invalid_json,
)

MAX_BODY_BYTES = 10 * 1024 * 1024
# Only this media type: a web page can POST text/plain, form and multipart bodies to any
# origin without asking (no CORS preflight), so accepting them would let any page publish
# through a visitor's browser. JSON is UTF-8 (RFC 8259): another charset is refused too.
MEDIA_TYPE = "application/json"


def error_response(error: PublishError) -> web.Response:
    response = web.Response(
        body=orjson.dumps(error.body()), status=error.status, content_type=MEDIA_TYPE
    )
    if refusal_closes(error, body_unread=False):
        response.force_close()
    return response


def parse_events(body: bytes) -> list[NewEvent]:
    """Validate a request body into events to append, or raise :class:`PublishError`."""
    try:
        data = json_values.loads(body)
    except json_values.JsonError as exc:
        raise invalid_json(exc) from None
    return events_from_json(data)


class PublishEndpoint:
    def __init__(self, event_log: EventLog, metrics: Metrics, guard: Guard) -> None:
        self.log = event_log
        self.metrics = metrics
        self.guard = guard
        # The counter of each status answered: ``labels()`` takes a lock and builds a
        # key on every call, several microseconds that each publish would pay.
        self._answered: dict[int, Any] = {}

    def count(self, status: int) -> None:
        """``athena_cdc_publish_requests{status}``: once per request answered."""
        counter = self._answered.get(status)
        if counter is None:
            counter = self._answered[status] = self.metrics.publish_requests.labels(str(status))
        counter.inc()

    async def expect(self, request: web.Request) -> web.Response | None:
        """``Expect: 100-continue``: refuse a body that is too large before the client
        sends it; otherwise invite it as aiohttp does (its handler, private: aiohttp is
        pinned, and tests/protocol/test_publish.py covers both answers)."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            response = error_response(_too_large())
            response.force_close()
            self.count(response.status)
            return response
        await _default_expect_handler(request)
        return None

    async def handle(self, request: web.Request) -> web.Response:
        try:
            response = await self._publish(request)
        except PublishError as error:
            response = error_response(error)
            if refusal_closes(error, body_unread=request.can_read_body):
                response.force_close()
        self.count(response.status)
        return response

    async def _publish(self, request: web.Request) -> web.Response:
        # Before the body is read. The key is compared as the bytes sent (its text need
        # not be UTF-8), and looked for only when one is configured.
        key = raw_header(request, KEY_HEADER) if self.guard.publish_key is not None else b""
        allowed = self.admit(
            request.headers, key, request.content_type, request.charset, request.content_length
        )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        except (RequestPayloadError, ConnectionResetError) as exc:
            # e.g. Content-Encoding: gzip on a body that is not; or the client hung up
            # mid-body ("Connection lost"): its doing, not a server error to log (the
            # answer then goes nowhere, quietly).
            raise PublishError(
                400, "invalid_body", f"The body could not be read: {clip(str(exc))}"
            ) from None
        events = self.events(allowed, body)
        appended = await publish_batch.append(self.log, events)
        return web.Response(body=created_body(appended), status=201, content_type=MEDIA_TYPE)

    # The rules of a request, shared with the lean lane of
    # :mod:`athena_cdc.server.publish_lane`: what is checked before the body is read,
    # then what is checked of the body, then the store's outcome.

    def admit(
        self,
        headers: Mapping[str, str],
        key: bytes,
        content_type: str,
        charset: str | None,
        content_length: int | None,
    ) -> ChannelPatterns:
        """The channels this request may publish to, checked before its body is read:
        the publisher (401), the media type (415) and the declared size (413)."""
        try:
            allowed = self.guard.publisher(headers, key)
        except Refused as refused:
            raise PublishError.refused(refused) from None
        if not is_json(content_type, charset):
            raise PublishError(
                415,
                "unsupported_media_type",
                f"Send the body as JSON with the header 'Content-Type: {MEDIA_TYPE}' "
                f"(got {clip(headers.get('Content-Type', 'none'))!r}).",
            )
        if content_length is not None and content_length > MAX_BODY_BYTES:
            raise _too_large()
        return allowed

    def events(self, allowed: ChannelPatterns, body: bytes) -> list[NewEvent]:
        """The body's events, each to a channel ``allowed`` (400, 403, 413 otherwise)."""
        if len(body) > MAX_BODY_BYTES:  # a chunked body has no Content-Length to check
            raise _too_large()
        events = parse_events(body)
        publish_batch.check_allowed(self.guard, allowed, events)
        return events


def created_body(appended: Sequence[Event]) -> bytes:
    """The 201's body: the acks of the appended events."""
    return b'{"events":[%b]}' % publish_batch.acks(appended)


def refusal_closes(error: PublishError, body_unread: bool) -> bool:
    """Whether the connection is closed after answering ``error``: after a 413 the unread
    rest of the body would keep it busy (and a draining server waiting for it); and a
    body refused before it was read is not worth reading for a client that should not
    be sending it."""
    return error.status == 413 or body_unread


def is_json(content_type: str, charset: str | None) -> bool:
    """``Content-Type``'s media type and charset parameter (as aiohttp parses them)."""
    return content_type == MEDIA_TYPE and (charset or "utf-8").lower() in ("utf-8", "utf8")


def raw_header(request: web.Request, name: str) -> bytes:
    """A header's bytes as sent (its text need not be UTF-8; compare_digest takes bytes)."""
    wanted = name.lower().encode()
    for key, value in request.raw_headers:
        if key.lower() == wanted:
            return value
    return b""


def _too_large() -> PublishError:
    return PublishError(
        413,
        "body_too_large",
        f"The body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB; split it into "
        "several requests.",
    )
