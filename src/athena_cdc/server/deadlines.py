"""Per-connection deadlines: no socket stays open on a peer that does not move.

aiohttp closes an idle keep-alive connection (``keepalive_timeout``, which also covers
a connection that never sends a first request), but has no deadline for a request
that is *in progress*: headers sent one byte every few seconds (slowloris), or a
chunked body that never ends, hold a socket and a file descriptor for as long as the
peer likes. :class:`DeadlineRequestHandler` adds the two missing timers:

* **headers** — the request line and headers must be complete within
  ``header_timeout`` of the connection opening, or, on a keep-alive connection, of the
  first byte of the next request (the wait before that byte is the keep-alive idle
  time). A peer that sent part of a request gets a JSON 408; one that sent nothing is
  closed silently, as an idle keep-alive connection is.
* **body** — once the headers are in, the whole body must arrive within
  ``body_timeout``. The handler reading it gets :class:`BodyTimeout`, an HTTP 408 in
  JSON, and the connection is closed after the answer.

WebSocket connections are not affected once upgraded: their liveness is the ping
interval's business. The TLS handshake deadline is asyncio's
``ssl_handshake_timeout``, which aiohttp's ``TCPSite`` does not pass on: see
:class:`DeadlineTCPSite`.

This relies on aiohttp internals (``_messages``, ``_waiter``, ``_ErrInfo``), which is
why aiohttp is pinned to an exact version and tests/protocol/test_deadlines.py
covers every timer over real sockets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from athena_cdc.server.limits import start_serving


@dataclass(frozen=True)
class Deadlines:
    """Seconds a peer is given for each step; see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    tls_handshake_timeout: float = 10.0


REQUEST_TIMEOUT_ERROR = "request_timeout"


def timeout_body(what: str, seconds: float, flag: str) -> bytes:
    """The JSON of a 408: what was late, and the option that sets the deadline."""
    return orjson.dumps(
        {
            "error": REQUEST_TIMEOUT_ERROR,
            "message": f"The {what} did not arrive within {seconds:g} s; the connection is closed.",
            "hint": f"Send the whole request without pausing (the server's {flag}).",
        }
    )


class HeaderTimeout(Exception):
    """The request line and headers did not arrive in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request headers not complete within {seconds:g} s")
        self.seconds = seconds


class BodyTimeout(web.HTTPRequestTimeout, TimeoutError):
    """Raised to the handler reading a body that did not arrive in time: a JSON 408.

    It is also a ``TimeoutError`` so that aiohttp's lingering read after the answer
    (which expects timeouts) ends quietly instead of logging an "Unhandled exception".
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(
            text=timeout_body("request body", seconds, "--body-timeout").decode(),
            content_type="application/json",
        )
        self.force_close()


class DeadlineRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol with header and body deadlines."""

    __slots__ = ("_body_timer", "_deadlines", "_header_timer", "_request_begun", "_timed_out")

    def __init__(self, *args: Any, deadlines: Deadlines, **kwargs: Any) -> None:
        super().__init__(*args, keepalive_timeout=deadlines.keepalive_timeout, **kwargs)
        self._deadlines = deadlines
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._request_begun = False  # a byte of the awaited request has arrived
        self._timed_out = False  # answered 408: whatever else comes is dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return
        if self._upgraded or self._payload_parser is not None:
            super().data_received(data)  # a WebSocket, or an upgrade being decided
            return
        if data and self._body_timer is None:
            # Not body bytes, so the start of a request: its headers are now awaited.
            self._request_begun = True
            if self._header_timer is None:
                self._start_header_timer()
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count == parsed_before:
            return
        self._cancel_header_timer()
        self._request_begun = False
        # Only the last request parsed can still be waiting for its body: the parser
        # reads requests one after another.
        if self._messages and not self._upgraded:
            _, payload = self._messages[-1]
            if not payload.is_eof():
                self._start_body_timer(payload)

    # -- headers ------------------------------------------------------------------------

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(
            self._deadlines.header_timeout, self._on_header_deadline
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_deadline(self) -> None:
        self._header_timer = None
        if self.transport is None or self._force_close or self._close:
            return
        if self._upgraded or self._payload_parser is not None:
            return
        if not self._request_begun:
            # Nothing of a request was sent: an idle connection, closed without a word.
            self.force_close()
            return
        # Queue a 408 as if the parser had produced it, so it is answered in order
        # after any request still being handled on this connection.
        self._timed_out = True
        error = HeaderTimeout(self._deadlines.header_timeout)
        self._messages.append((_ErrInfo(408, error, str(error)), EMPTY_PAYLOAD))
        self._request_count += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- body ---------------------------------------------------------------------------

    def _start_body_timer(self, payload: StreamReader) -> None:
        self._cancel_body_timer()
        self._body_timer = self._loop.call_later(
            self._deadlines.body_timeout, self._on_body_deadline, payload
        )
        payload.on_eof(self._cancel_body_timer)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _on_body_deadline(self, payload: StreamReader) -> None:
        self._body_timer = None
        if self.transport is None or payload.is_eof() or payload.exception() is not None:
            return
        self._timed_out = True
        # The handler reading the body gets the 408; one that is not reading it (it
        # already answered) ends its lingering read on it.
        payload.set_exception(BodyTimeout(self._deadlines.body_timeout))


class DeadlineTCPSite(web.TCPSite):
    """aiohttp's TCPSite, with a deadline on the TLS handshake.

    ``TCPSite.start`` does not pass ``ssl_handshake_timeout`` to
    ``loop.create_server``, so a peer that connects and never sends a ClientHello
    would hold its socket for asyncio's default of 60 s. This is ``TCPSite.start``
    with that one argument added (asyncio and uvloop both honour it), and with the
    accept back-off of :func:`athena_cdc.server.limits.start_serving`.
    """

    __slots__ = ("_tls_handshake_timeout",)

    def __init__(self, *args: Any, tls_handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_handshake_timeout = tls_handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        tls = self._ssl_context
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=tls,
            ssl_handshake_timeout=self._tls_handshake_timeout if tls is not None else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            start_serving=False,
        )
        await start_serving(self._server)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
