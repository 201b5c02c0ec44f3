"""WebSocket frames written by the server (RFC 6455 §5.2).

Server frames are never masked, and compression is off, so one event's frame is the
same bytes for every subscriber: encode once, frame once, write to many sockets.
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81
_CLOSE_FIN = 0x88


def _header(first_byte: int, length: int) -> bytes:
    if length < 126:
        return bytes((first_byte, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first_byte, 126, length)
    return struct.pack("!BBQ", first_byte, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return _header(_TEXT_FIN, len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control-frame limit."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return _header(_CLOSE_FIN, len(body)) + body


def frame_header_length(frame: bytes) -> int:
    """Length of the header of an unmasked frame built by this module."""
    size = frame[1] & 0x7F
    return 2 if size < 126 else 4 if size == 126 else 10
