"""A WebSocket client that floods a server with pings: run as a separate process.

``python -m tests.protocol._ping_flood PORT COUNT SECONDS`` connects as client
``flood``, sends up to COUNT empty pings (masked, as the RFC requires) for at most
SECONDS, reading and discarding whatever comes back on another thread; then sends one
text message and waits for a text answer, which shows that the server has read every
ping before it. Prints ``<pings sent> <seconds until the server caught up>``.

A process of its own, so that writing the flood costs the server's event loop nothing
beyond reading it.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

PING = b"\x89\x80\x00\x00\x00\x00"
TEXT_PING = b"\x81\x8f\x00\x00\x00\x00" + b'{"type":"ping"}'
PINGS_PER_WRITE = 8192


def _drain(sock: socket.socket, text_seen: threading.Event) -> None:
    buffer = bytearray()
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return
            buffer += data
            while len(buffer) >= 2:
                length = buffer[1] & 0x7F
                header = 2 if length < 126 else 4 if length == 126 else 10
                if length >= 126:
                    if len(buffer) < header:
                        break
                    length = int.from_bytes(buffer[2:header], "big")
                if len(buffer) < header + length:
                    break
                if buffer[0] & 0x0F == 0x1:
                    text_seen.set()
                del buffer[: header + length]
    except OSError:
        return


def main(port: int, count: int, seconds: float) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"X-Athena-Client: flood\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    text_seen = threading.Event()
    # The "subscribed" message is the first text frame: wait for it, then clear.
    threading.Thread(target=_drain, args=(sock, text_seen), daemon=True).start()
    text_seen.wait(10)
    text_seen.clear()
    chunk = PING * PINGS_PER_WRITE
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < count and time.monotonic() < deadline:
        sock.sendall(chunk)
        sent += PINGS_PER_WRITE
    done_sending = time.monotonic()
    sock.sendall(TEXT_PING)
    caught_up = text_seen.wait(60)
    print(sent, f"{time.monotonic() - done_sending:.3f}" if caught_up else "never", flush=True)
    sock.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
