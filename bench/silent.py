"""A WebSocket client that never reads: the slow consumer of the ``slow`` scenario.

It does the opening handshake over a plain socket whose receive buffer is made small
*before* connecting (so the kernel does not auto-tune it to megabytes and hide the
backlog from the server), then stops reading. The server's unsent bytes for it grow until
the server's slow-consumer limit closes it with 4008. Afterwards :meth:`drain` reads
whatever is left and looks for the close frame, if the server sent one before closing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct


class SilentClient:
    def __init__(self, host: str, port: int, name: str, recv_buffer: int = 4096) -> None:
        self.host, self.port, self.name = host, port, name
        self.recv_buffer = recv_buffer
        self.sock: socket.socket | None = None

    async def connect(self, within_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), within_s)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"X-Athena-Client: {self.name}\r\n\r\n"
            ).encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:  # read the 101 response only, a byte at a time
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), within_s)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head[:100]!r}")
        self.sock = sock

    async def drain(self, within_s: float = 10.0) -> int | None:
        """Read everything left; return the close code received, if any."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        # Open the window so the backlog comes in large reads, and walk the frames
        # incrementally: re-walking the whole backlog per read was quadratic and took the
        # load generator's CPU while the readers' latency was being measured.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        data = bytearray()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(within_s):
                while True:
                    chunk = await loop.sock_recv(self.sock, 1 << 20)
                    if not chunk:
                        break
                    data += chunk
                    code, consumed = walk_frames(data)
                    del data[:consumed]
                    if code is not None:
                        return code
        return walk_frames(data)[0]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def close_code(data: bytes | bytearray) -> int | None:
    """Walk unmasked server frames in ``data``; the code of a close frame among them."""
    return walk_frames(data)[0]


def walk_frames(data: bytes | bytearray) -> tuple[int | None, int]:
    """The close code among the complete frames at the start of ``data`` (None if no
    close frame), and how many bytes those complete frames take."""
    pos = 0
    while pos + 2 <= len(data):
        start = pos
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            if pos + 2 > len(data):
                return None, start
            (length,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif length == 127:
            if pos + 8 > len(data):
                return None, start
            (length,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        if pos + length > len(data):
            return None, start
        if opcode == 0x8:
            code: int = struct.unpack_from("!H", data, pos)[0] if length >= 2 else 1005
            return code, pos + length
        pos += length
    return None, pos
