"""The server's keep-alive: ping a quiet peer, drop one that stays silent.

A peer from which nothing has arrived (no pong, no message, not a byte) for
``interval`` seconds gets a ping; one from which nothing has arrived for ``timeout``
seconds is presumed gone and its socket is dropped (there is no one to answer a close
handshake). Anything the peer sends counts, so a busy client is never pinged.

One timer per connection, re-armed only when it fires: no work per received frame
beyond the time stamp the frame guard keeps (``last_heard``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

PING_FRAME = b"\x89\x00"  # final, unmasked, empty ping (RFC 6455 §5.5.2)


class KeepAlive:
    __slots__ = (
        "_handle",
        "_interval",
        "_last_heard",
        "_loop",
        "_on_silent",
        "_pinged",
        "_timeout",
        "_transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        last_heard: Callable[[], float],
        *,
        interval: float,
        timeout: float,
        on_silent: Callable[[float], None],
    ) -> None:
        self._transport = transport
        self._last_heard = last_heard
        # A timeout shorter than the interval would drop a healthy idle peer before it
        # was ever asked to answer: ping it half-way instead.
        self._interval = min(interval, timeout / 2)
        self._timeout = timeout
        self._on_silent = on_silent
        self._loop = asyncio.get_running_loop()
        self._pinged = self._loop.time()
        self._handle = self._loop.call_at(self._pinged + self._interval, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        heard = self._last_heard()
        if now - heard >= self._timeout:
            self._on_silent(now - heard)
            return
        if now - max(heard, self._pinged) >= self._interval and not self._transport.is_closing():
            # Written straight to the socket: the frame is whole, and everything else the
            # server writes is whole frames too, so it cannot land inside another frame.
            self._transport.write(PING_FRAME)
            self._pinged = now
        wake = min(max(heard, self._pinged) + self._interval, heard + self._timeout)
        self._handle = self._loop.call_at(wake, self._tick)

    def stop(self) -> None:
        self._handle.cancel()
