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
the comment above :func:`start_serving`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from athena_cdc.logging_limits import RateLimitedLog

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
#
# When the process has no descriptor left, accept() fails with EMFILE and the pending
# connection stays in the listen backlog.
#
# uvloop (the default; libuv) closes a spare descriptor, accepts the waiting connections
# and closes them at once, reports nothing, and accepts normally again once descriptors
# are free.
#
# asyncio reports "socket.accept() out of system resource" (with a traceback) to the
# loop's exception handler, stops watching the socket and retries one second later. But
# in Python 3.11 its accept loop does not stop there (CPython gh-151615, fixed upstream
# in 2026): it calls accept() again, once per unit of listen backlog (8192 here), each
# time with a report and another scheduled retry. Measured with 150 idle sockets over a limit of 64
# descriptors: 32,655 reports and 44,016 tracebacks (32 MB of log) in 3 s, a third of a
# core busy, and 16,384 more tracebacks when stopped. Two small fixes below: the
# listening socket answers "would block" right after an EMFILE, which ends that loop
# (one report and one retry per second), and the reports become one warning line.

_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
_WARN_EVERY = 10.0  # seconds between two warnings about it


class _BackOffListeningSocket(socket.socket):
    """A listening socket whose accept() ends asyncio's accept loop after an EMFILE."""

    retry_at = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        if time.monotonic() < self.retry_at:
            # asyncio's loop ends on this error; its own retry comes 1 s later.
            raise BlockingIOError(errno.EAGAIN, "out of file descriptors: backing off")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                self.retry_at = time.monotonic() + 0.5
            raise


async def start_serving(server: asyncio.AbstractServer) -> None:
    """Start a server made with ``start_serving=False``, backing off on EMFILE (asyncio)."""
    if isinstance(server, asyncio.base_events.Server):
        # Same listening sockets (same descriptors), in the class above.
        listening: list[socket.socket] = server._sockets  # type: ignore[attr-defined]
        server._sockets = [  # type: ignore[attr-defined]
            _BackOffListeningSocket(s.family, s.type, s.proto, fileno=s.detach()) for s in listening
        ]
    await server.start_serving()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """One warning line per 10 s, not a traceback per attempt, when accept() hits EMFILE.

    Also drops asyncio's error when an accept retry that was due finds the server
    already closed (it re-watches descriptor -1): a stop while out of descriptors.
    That retry may fire after the server has stopped, so the handler stays installed;
    everything else goes to the handler it replaced. Installed once per loop.
    """
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_accept_errors", False):
        return
    warnings = RateLimitedLog(log, interval=_WARN_EVERY)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_retry_after_close(context):
            return
        if context.get("message") != _ACCEPT_EXHAUSTED:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        warnings.warning(
            "out of file descriptors (%s): new connections wait in the listen backlog; "
            "raise the open-files limit (ulimit -n) or lower --max-connections",
            context.get("exception"),
        )

    handler.quiets_accept_errors = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _is_retry_after_close(context: dict[str, Any]) -> bool:
    callback = getattr(context.get("handle"), "_callback", None)
    return getattr(callback, "__name__", "") == "_start_serving" and isinstance(
        context.get("exception"), ValueError
    )
