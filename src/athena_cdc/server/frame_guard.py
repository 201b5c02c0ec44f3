"""RFC 6455 checks that aiohttp's frame reader leaves out, and reading in slices.

aiohttp 3.14.5's reader (``aiohttp/_websocket/reader_py.py``; ``reader_c`` is the same
code compiled) already fails the connection with 1002 on reserved bits, unknown opcodes,
fragmented or oversized (> 125 bytes) control frames and a one-byte close payload, with
1009 on a message over ``max_msg_size`` and with 1007 on a close reason that is not
UTF-8. It lets through:

* a client frame without a mask (RFC 6455 §5.1: the server MUST close the connection);
* the close codes 1006 and 5000-65535 (it checks only codes below 3000).

:class:`FrameGuard` sits between the connection and that reader: it walks the frame
headers of the bytes the socket delivers, hands the reader only frames it has checked,
and on a violation hands it nothing more and fails the connection through the reader's
own error path, so aiohttp sends the close frame (1002) and then drops the socket, as
for the errors it finds itself.

Walking headers costs a few hundred nanoseconds per frame; a client that sends many
tiny frames (a ping flood) can put 40,000 of them in one read. So the guard takes at
most :data:`FRAMES_PER_SLICE` frames per turn of the event loop: the rest waits here,
with the socket paused, and the next slice is scheduled with ``call_soon``, so other
clients' events go out in between.

It also notes when the peer last sent anything, which the keep-alive needs.

This relies on aiohttp internals — the handler's ``_payload_parser`` and
``_message_tail``, the response's ``_reader`` queue and ``_post_start``, and the
protocol's ``_pause_reading_for_buffer`` / ``_resume_reading_for_buffer`` — which is why
aiohttp is pinned to an exact version; ``tests/protocol/test_conformance.py`` sends each
case as raw bytes and checks the close frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import WebSocketError, WSCloseCode, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.web_protocol import RequestHandler

from athena_cdc.protocol import close_codes

FRAMES_PER_SLICE = 64
# Frames of one fragmented message: empty continuation frames add no bytes to it, so the
# 64 KiB message bound alone would let a client send one message forever.
MAX_FRAGMENTS = 1024

# RFC 6455 §7.4: codes a peer may send. 1004 is reserved, 1005, 1006 and 1015 must never
# be sent; 1012-1014 are registered with IANA since; 3000-4999 belong to libraries and
# applications. Everything else is a protocol error.
_VALID_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015)))
_CLOSE_OPCODE = 0x8


def close_code_allowed(code: int) -> bool:
    """May a peer send this code in a close frame (RFC 6455 §7.4)?"""
    return code in _VALID_CLOSE_CODES or 3000 <= code <= 4999


class FrameGuard:
    """Wraps aiohttp's ``WebSocketReader`` (the connection's payload parser)."""

    __slots__ = (
        "_backlog",
        "_backlog_at",
        "_failed",
        "_fragments",
        "_handler",
        "_held",
        "_loop",
        "_paused",
        "_queue",
        "_reader",
        "_skip",
        "last_heard",
    )

    def __init__(
        self, reader: WebSocketReader, queue: WebSocketDataQueue, handler: RequestHandler
    ) -> None:
        self._reader = reader
        self._queue = queue  # where the reader's errors go
        self._handler = handler  # the connection's protocol: flow control
        self._loop = asyncio.get_running_loop()
        self.last_heard = self._loop.time()
        self._held = b""  # the start of a frame header not yet complete
        self._skip = 0  # payload bytes of the current frame still to pass through
        self._fragments = 0  # frames of the current fragmented message so far
        self._backlog = b""  # checked-later bytes beyond this turn's slice
        self._backlog_at = 0
        self._paused = False
        self._failed = False

    # -- what the connection calls -----------------------------------------------------
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        self.last_heard = self._loop.time()
        if self._paused:
            # A slice is pending: keep the order, the scheduled slice takes these too.
            self._backlog = self._backlog[self._backlog_at :] + data
            self._backlog_at = 0
            return False, b""
        return self._feed(data, 0), b""

    def feed_eof(self) -> None:
        # The peer has finished sending: what waits for a slice is read now, at once,
        # as aiohttp reads what its reader holds, so nothing the peer sent is lost.
        if self._backlog and not self._failed:
            data, start = self._backlog, self._backlog_at
            self._backlog, self._backlog_at = b"", 0
            self._feed(data, start, budget=len(data))
        self._backlog = b""
        self._reader.feed_eof()

    # -- walking frame headers -----------------------------------------------------------
    def _feed(self, data: bytes, start: int, budget: int = FRAMES_PER_SLICE) -> bool:
        """Check and forward up to ``budget`` frames of ``data[start:]``; True when failed."""
        if self._held:
            data, start, self._held = self._held + data[start:], 0, b""
        end = len(data)
        pos, frames, skip = start, 0, self._skip
        problem = None
        fail_code = close_codes.PROTOCOL_ERROR
        sliced = False
        while True:
            if skip:  # payload: passed through unread
                if end - pos <= skip:
                    skip -= end - pos
                    pos = end
                    break
                pos += skip
                skip = 0
            available = end - pos
            if not available:
                break
            if frames == budget:
                sliced = True
                break
            if available < 2:
                break
            first, second = data[pos], data[pos + 1]
            if not second & 0x80:
                problem = "client frames must be masked"
                break
            length = second & 0x7F
            header = 6  # 2 bytes, then the 4-byte mask
            if length == 126:
                header = 8
                if available < header:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                header = 14
                if available < header:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if (first & 0x0F) == _CLOSE_OPCODE and 2 <= length <= 125:
                # The code is the first two payload bytes, masked. (The reader itself
                # refuses a 1-byte close payload and control frames over 125 bytes.)
                if available < header + 2:
                    break
                mask = pos + header - 4
                code = (data[pos + header] ^ data[mask]) << 8 | (
                    data[pos + header + 1] ^ data[mask + 1]
                )
                if not close_code_allowed(code):
                    problem = f"close code {code} is not allowed"
                    break
            elif available < header:
                break
            if not first & 0x08:  # a data or continuation frame (control frames interleave)
                self._fragments = 0 if first & 0x80 else self._fragments + 1  # FIN ends it
                if self._fragments > MAX_FRAGMENTS:
                    problem = f"a message of more than {MAX_FRAGMENTS} fragments"
                    fail_code = close_codes.MESSAGE_TOO_BIG
                    break
            pos += header
            skip = length
            frames += 1
        self._skip = skip
        if pos > start and self._forward(data[start:pos]):
            return True
        if problem is not None:
            self._fail(problem, fail_code)
            return True
        if sliced:
            self._backlog, self._backlog_at = data, pos
            self._pause()
        elif pos < end:
            self._held = data[pos:]  # an incomplete header: wait for the rest
        return False

    def _forward(self, chunk: bytes) -> bool:
        eof, _ = self._reader.feed_data(chunk)
        if eof:  # the reader found an error of its own and failed the connection
            self._failed = True
        return bool(eof)

    def _fail(self, problem: str, code: int = close_codes.PROTOCOL_ERROR) -> None:
        self._failed = True
        self._backlog = b""
        self._queue.set_exception(WebSocketError(code, problem))

    # -- slices ------------------------------------------------------------------------
    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._handler._pause_reading_for_buffer()
        self._loop.call_soon(self._next_slice)

    def _next_slice(self) -> None:
        if self._failed:
            return
        data, start = self._backlog, self._backlog_at
        self._backlog, self._backlog_at = b"", 0
        if self._feed(data, start) or self._backlog:
            return  # failed (the socket stays paused until it closes), or more slices
        self._paused = False
        self._handler._resume_reading_for_buffer()


class GuardedWebSocketResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose incoming frames pass a :class:`FrameGuard` first."""

    guard: FrameGuard | None = None
    # Called before any close frame goes out, whoever closes (aiohttp on a protocol
    # error, the server): replies already queued for the client go out first.
    before_close: Callable[[], None] | None = None

    def _post_start(
        self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request would go straight to the reader.
        early = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        assert self._reader is not None
        guard = FrameGuard(handler._payload_parser, self._reader, handler)
        handler._payload_parser = guard
        self.guard = guard
        if early and guard.feed_data(early)[0]:
            handler.close()

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if self.before_close is not None and not self.closed:
            self.before_close()
        return await super().close(code=code, message=message, drain=drain)
