"""The lean lane of ``POST /events``: a plain publish answered without aiohttp's machinery.

aiohttp spends about 115 µs of CPU on each request around the handler (a Request, the
router, the middlewares, a StreamResponse and its writer, keep-alive bookkeeping): most
of what a single-event publish costs. :class:`LaneRequestHandler` answers the common
case itself, straight from ``data_received``, when all of this holds:

* the connection is idle at a request boundary: not upgraded, nothing queued for or
  being handled by aiohttp, its parser holding no part of a request (every earlier
  read was whole requests, see :func:`split_request`), reading and writing not paused,
  no deadline fired and no close under way;
* the read holds exactly one request, ``POST /events HTTP/1.1``, whole: header lines of
  printable ASCII with token names, each at most once, only the names of
  :data:`LANE_HEADERS` (no ``Transfer-Encoding``, ``Expect``, ``Content-Encoding`` or
  ``Upgrade``), a ``Host`` (aiohttp refuses a request without one), a
  ``Content-Length`` equal to the bytes that follow the head, a JSON ``Content-Type``
  of :data:`JSON_TYPES`, no ``Connection`` but ``keep-alive``.

Everything else goes to aiohttp unchanged: a fallback is always correct, only slower.
The rules of a publish are :class:`~athena_cdc.sources.http_publish.PublishEndpoint`'s,
called by both paths; this module only frames the request and writes the response with
the bytes aiohttp would send (tests/protocol/test_publish_lane.py compares them).

A store that completes an append later (sqlite, redis, a worker's link) is answered
from the future's callback; reading is paused meanwhile, so that a pipelined request
cannot be answered before this one, and aiohttp's keep-alive timer and graceful
shutdown see the request as in progress, as they would a handler.

This relies on aiohttp internals (``_waiter``, ``_messages``, ``_request_in_progress``,
``_handler_waiter``, ``_process_keepalive``...), which is why aiohttp is pinned.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

import orjson
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.log import server_logger
from multidict import CIMultiDict

from athena_cdc.auth.guard import KEY_HEADER
from athena_cdc.log.base import Event, StorageUnavailable
from athena_cdc.server.deadlines import DeadlineRequestHandler
from athena_cdc.sources.http_publish import (
    PublishEndpoint,
    created_body,
    refusal_closes,
)
from athena_cdc.sources.publish_batch import PublishError, unavailable

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A value: printable ASCII, no leading or trailing whitespace (then it is the same
# string for aiohttp, which strips them), never empty.
_FIELD = rb"(" + _TOKEN + rb"):[ ]*([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)\r\n"
_HEAD = re.compile(rb"([A-Z]+ [\x21-\x7e]+) HTTP/1\.1\r\n((?:" + _FIELD + rb")*)\r\n")
_FIELDS = re.compile(_FIELD)
_CONTENT_LENGTH = re.compile(rb"0|[1-9][0-9]{0,9}")
# Under aiohttp's limits (8190 bytes per line): a longer head is aiohttp's to refuse.
MAX_HEAD_BYTES = 8000

# The only headers of a request the lane answers: those a producer sends, whose meaning
# for POST /events is known (any other goes to aiohttp, which may know better).
LANE_HEADERS = frozenset(
    {
        b"host",
        b"content-type",
        b"content-length",
        b"authorization",
        KEY_HEADER.lower().encode(),
        b"user-agent",
        b"accept",
        b"accept-encoding",
        b"connection",
    }
)
# Content-Type values taken as aiohttp parses them: (media type, charset).
JSON_TYPES: dict[bytes, tuple[str, str | None]] = {
    b"application/json": ("application/json", None),
    b"application/json; charset=utf-8": ("application/json", "utf-8"),
    b"application/json;charset=utf-8": ("application/json", "utf-8"),
    b"application/json; charset=UTF-8": ("application/json", "UTF-8"),
    b"application/json;charset=UTF-8": ("application/json", "UTF-8"),
}
_SERVER = SERVER_SOFTWARE.encode()
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class Request(NamedTuple):
    """One whole request, as read: ``b"METHOD target"``, its headers (lower-case names,
    each once) and its body."""

    line: bytes
    fields: dict[bytes, bytes]
    body: bytes


def split_request(data: bytes) -> Request | None:
    """``data`` as exactly one whole, plainly framed HTTP/1.1 request, else None.

    Plainly framed: no ``Transfer-Encoding``, ``Upgrade`` or ``Expect``, no header
    twice, and the body is exactly ``Content-Length`` bytes (none without one). After
    such a read aiohttp's parser is at a request boundary again, whoever answers it.
    """
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end < 0:
        return None
    head = _HEAD.fullmatch(data, 0, end + 4)
    if head is None:
        return None
    fields: dict[bytes, bytes] = {}
    for name, value in _FIELDS.findall(head[2]):
        key = name.lower()
        if key in fields:
            return None
        fields[key] = value
    if b"transfer-encoding" in fields or b"upgrade" in fields or b"expect" in fields:
        return None
    connection = fields.get(b"connection")
    if connection is not None and connection.lower() not in (b"keep-alive", b"close"):
        return None
    body = data[end + 4 :]
    length = fields.get(b"content-length")
    if length is None:
        return None if body else Request(head[1], fields, body)
    if _CONTENT_LENGTH.fullmatch(length) is None or int(length) != len(body):
        return None
    return Request(head[1], fields, body)


class Answer(NamedTuple):
    response: bytes  # the whole response, head and body
    close: bool  # the connection is closed once it is written


class PublishLane:
    """What the lane answers and how: the publish endpoint's rules, aiohttp's bytes."""

    def __init__(self, endpoint: PublishEndpoint, extra_headers: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        # Added to each response by an on_response_prepare hook on aiohttp's side (the
        # worker's number), after the headers aiohttp sets itself.
        self._extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in extra_headers.items())
        self.served = 0  # requests answered by the lane (the tests' way to know)

    def accepts(self, request: Request) -> bool:
        fields = request.fields
        if request.line != b"POST /events" or not LANE_HEADERS.issuperset(fields):
            return False
        if b"content-length" not in fields or fields.get(b"content-type") not in JSON_TYPES:
            return False
        if b"host" not in fields:
            return False  # aiohttp refuses an HTTP/1.1 request without one (RFC 9112 3.2)
        connection = fields.get(b"connection")
        if connection is not None and connection.lower() != b"keep-alive":
            return False
        # aiohttp's 500 page is HTML for such a client: not worth imitating.
        return b"text/html" not in fields.get(b"accept", b"")

    def begin(self, request: Request) -> Answer | asyncio.Future[list[Event]] | None:
        """The answer, or the append to answer from once it is done (:meth:`finish`)."""
        endpoint = self.endpoint
        fields = request.fields
        body = request.body
        try:
            try:
                key = fields.get(b"x-athena-key", b"")
                allowed = endpoint.admit(
                    CIMultiDict((k.decode(), v.decode()) for k, v in fields.items()),
                    key if endpoint.guard.publish_key is not None else b"",
                    *JSON_TYPES[fields[b"content-type"]],
                    len(body),
                )
            except PublishError as error:
                return self.refuse(error, body_unread=bool(body))
            events = endpoint.events(allowed, body)
            # Begun now, as the WebSocket publish does: a store that commits later
            # completes the future then (the answer waits; see LaneRequestHandler).
            future = endpoint.log.start_append(events)
        except PublishError as error:
            return self.refuse(error, body_unread=False)
        except Exception as exc:
            return self._internal_error(exc)
        return self.finish(future) if future.done() else future

    def finish(self, future: asyncio.Future[list[Event]]) -> Answer | None:
        """The answer of a done append; None if it was cancelled (the server is stopping:
        aiohttp closes the connection of a handler cancelled so, without a word)."""
        if future.cancelled():
            return None
        error = future.exception()
        if error is None:
            self.endpoint.count(201)
            return self._answer(201, created_body(future.result()), close=False)
        if isinstance(error, StorageUnavailable):
            return self.refuse(unavailable(error), body_unread=False)
        return self._internal_error(error)

    def refuse(self, error: PublishError, body_unread: bool) -> Answer:
        self.endpoint.count(error.status)
        return self._answer(
            error.status, orjson.dumps(error.body()), refusal_closes(error, body_unread)
        )

    def _answer(
        self,
        status: int,
        body: bytes,
        close: bool,
        content_type: bytes = b"application/json",
    ) -> Answer:
        # The order of aiohttp's headers: the response's own, the defaults it adds,
        # Connection, then those of on_response_prepare hooks.
        return Answer(
            b"HTTP/1.1 %d %b\r\nContent-Type: %b\r\nContent-Length: %d\r\nDate: %b\r\n"
            b"Server: %b\r\n%b%b\r\n%b"
            % (
                status,
                _REASONS[status],
                content_type,
                len(body),
                rfc822_formatted_time().encode(),
                _SERVER,
                b"Connection: close\r\n" if close else b"",
                self._extra,
                body,
            ),
            close,
        )

    def _internal_error(self, exc: BaseException) -> Answer:
        """What aiohttp answers a handler's unexpected exception: a plain-text 500, the
        connection closed, and the traceback logged (not counted as a publish answer,
        as the endpoint's handler never returned)."""
        server_logger.error("Error handling request", exc_info=exc)
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        text = f"{status.value} {status.phrase}\n\n{status.description}"
        return self._answer(500, text.encode(), True, b"text/plain; charset=utf-8")


class LaneRequestHandler(DeadlineRequestHandler):
    """aiohttp's HTTP protocol with deadlines, and the publish lane in front of it."""

    __slots__ = ("_lane", "_lane_clean", "_lane_held")

    def __init__(self, *args: Any, publish_lane: PublishLane | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane = publish_lane
        # Every read so far was whole requests: aiohttp's parser holds no part of one.
        # Once a read is not, the lane is off for good on this connection (its parser
        # state cannot be seen from here).
        self._lane_clean = publish_lane is not None
        # A lane answer is awaited: what arrives meanwhile waits behind it, in order.
        self._lane_held: bytes | None = None

    def data_received(self, data: bytes) -> None:
        if self._lane_held is not None:
            self._lane_held += data
            return
        if self._lane_clean and data:
            request = split_request(data)
            if request is None:
                self._lane_clean = False
            elif self._lane_idle():
                lane = self._lane
                assert lane is not None
                if lane.accepts(request):
                    self._lane_serve(lane, request)
                    return
        super().data_received(data)

    def _lane_idle(self) -> bool:
        """Whether aiohttp is waiting for the next request with nothing under way."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and self.transport is not None
            and not (self._force_close or self._close or self._timed_out)
            and not (self._upgraded or self._payload_parser is not None or self._messages)
            and not (self._request_in_progress or self._request_begun)
            and self._body_timer is None
            and not (self._paused or self._reading_paused or self._buffer_paused)
            and not self._logging_enabled  # an access log would miss the lane's requests
        )

    def _lane_serve(self, lane: PublishLane, request: Request) -> None:
        # What aiohttp does on parsing a request: the header deadline is met.
        self._cancel_header_timer()
        self._request_count += 1
        if self._manager is not None:
            self._manager.requests_count += 1
        lane.served += 1
        outcome = lane.begin(request)
        if not isinstance(outcome, asyncio.Future):
            self._lane_write(outcome)
            return
        # Answered once the store is done: until then nothing more is read, so that a
        # pipelined request waits its turn, and aiohttp takes the request as in progress
        # (its keep-alive does not close the connection, a drain waits for the answer).
        self._lane_held = b""
        self._request_in_progress = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        outcome.add_done_callback(self._lane_done)

    def _lane_done(self, future: asyncio.Future[list[Event]]) -> None:
        held, self._lane_held = self._lane_held, None
        self._request_in_progress = False
        lane = self._lane
        assert lane is not None
        # Counted even if the peer left meanwhile, as aiohttp's handler (not cancelled
        # when its peer leaves) would have; then there is nobody to write to.
        self._lane_write(lane.finish(future))
        waiter = self._handler_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a graceful shutdown was waiting for this answer
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not (self._reading_paused or self._buffer_paused):
            transport.resume_reading()
        if held:
            self.data_received(held)

    def _lane_write(self, answer: Answer | None) -> None:
        transport = self.transport
        if transport is None:
            return
        if answer is not None:
            transport.write(answer.response)
        if answer is None or answer.close or self._close or self._force_close:
            # As aiohttp after a response that closes, or one answered while stopping:
            # the written answer is flushed before the socket closes.
            self.force_close()
            return
        # aiohttp's keep-alive, restarted as after each request it answers.
        close_time = self._loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def _process_keepalive(self) -> None:
        if self._lane_held is not None:
            # A lane request is in progress: as for a handler running, not idle. The
            # timer is restarted once it is answered.
            self._keepalive_handle = None
            return
        super()._process_keepalive()
