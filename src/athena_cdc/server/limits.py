"""Connection caps: WebSocket connections in total and per client IP.

What counts: every ``GET /ws`` request from the moment it reaches the handler until
the handler returns, so an upgraded WebSocket for its whole life, and the short time
an upgrade is being checked. Plain HTTP connections (``POST /events``, ``/health``,
``/metrics``) do not count: each is bounded in time by the deadlines of
:mod:`athena_cdc.server.deadlines` instead, and counting them would let a flood of
idle HTTP sockets lock the WebSocket clients out (and the reverse would make
``/health`` unreachable exactly when it matters).

Beyond a cap the upgrade is refused before it happens: HTTP 503 when the server is
full, 429 when one address has too many. The client IP is the TCP peer's address:
behind a reverse proxy every client shares the proxy's, so raise (or turn off, with 0)
``--max-connections-per-ip`` there.

Also here: what happens when the process runs out of file descriptors anyway (see
:func:`quiet_accept_errors`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionLimits:
    """Counts open WebSocket connections; a limit of 0 means no limit."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def refusal(self, ip: str) -> web.Response | None:
        """The answer for one more connection from ``ip``, or None if it may come in."""
        if self.max_total and self.total >= self.max_total:
            return _refuse(
                503,
                "server_full",
                f"The server holds its maximum of {self.max_total} connections.",
                "Retry in a moment with backoff, or connect to another node.",
            )
        if self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            return _refuse(
                429,
                "too_many_connections",
                f"Your address {ip} already holds {self.max_per_ip} connections, the "
                "most one address may hold.",
                "Close connections you no longer use (one connection can subscribe to "
                "many channels), then retry.",
            )
        return None

    def guard(self, handler: Handler) -> Handler:
        """``handler`` for as long as the caps allow; the count is released on every path."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            ip = request.remote or "unknown"
            refused = self.refusal(ip)
            if refused is not None:
                return refused
            self.total += 1
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
            try:
                return await handler(request)
            finally:
                self.total -= 1
                left = self.per_ip[ip] - 1
                if left:
                    self.per_ip[ip] = left
                else:
                    del self.per_ip[ip]  # no entry kept for an address that left

        return guarded


def _refuse(status: int, error: str, message: str, hint: str) -> web.Response:
    body = orjson.dumps({"error": error, "message": message, "hint": hint})
    return web.Response(body=body, status=status, content_type="application/json")


# -- out of file descriptors ----------------------------------------------------------

_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
_WARN_EVERY = 10.0  # seconds between two warnings about it


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """One warning line per 10 s, not a traceback per second, when accept() hits EMFILE.

    When the process has no file descriptor left, asyncio's accept loop reports
    "socket.accept() out of system resource" with a traceback to the loop's exception
    handler, stops accepting for one second and tries again (no busy loop; waiting
    clients stay in the listen backlog). uvloop (libuv) instead closes a spare
    descriptor, accepts and at once closes the waiting connections, and reports
    nothing. Either way the deadlines free descriptors held by idle peers. This
    handler turns asyncio's report into a rate-limited warning that says what to do.
    Returns a function that puts the previous handler back.
    """
    previous = loop.get_exception_handler()
    last_warning = -_WARN_EVERY

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last_warning
        if context.get("message") != _ACCEPT_EXHAUSTED:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - last_warning >= _WARN_EVERY:
            last_warning = now
            log.warning(
                "out of file descriptors (%s): new connections wait in the listen backlog; "
                "raise the open-files limit (ulimit -n) or lower --max-connections",
                context.get("exception"),
            )

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)
