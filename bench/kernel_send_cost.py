"""The floor under fan-out on this machine: CPU per loopback send, with and without uvloop.

Opens N TCP connections to itself and writes one ~300-byte frame to each, first with a
plain non-blocking ``socket.send``, then through uvloop transports (what athena-cdc
uses). If both cost the same, the time is the kernel's (TCP send plus, on loopback, the
receiving side's softirq), and no Python-level change to the fan-out can lower it.

    .venv/bin/python bench/kernel_send_cost.py [connections]
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable

import uvloop

FRAME = b"x" * 300


def _pairs(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    clients, servers = [], []
    for _ in range(count):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setblocking(False)
        clients.append(client)
        servers.append(server)
    listener.close()
    return clients, servers


def _per_send_us(write_all: Callable[[], object], drain: list[socket.socket], count: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        write_all()
        best = min(best, (time.process_time() - started) / count * 1e6)
        for client in drain:
            client.recv(1 << 16)
    return best


async def main(count: int) -> None:
    clients, servers = _pairs(count)
    raw = _per_send_us(lambda: [s.send(FRAME) for s in servers], clients, count)
    loop = asyncio.get_running_loop()
    transports = [(await loop.connect_accepted_socket(asyncio.Protocol, s))[0] for s in servers]
    # A list of write()'s Nones, as socket.send's list of counts above: both pay the same.
    via_uvloop = _per_send_us(
        lambda: [t.write(FRAME) for t in transports],  # type: ignore[func-returns-value]
        clients,
        count,
    )
    print(f"{count} connections, {len(FRAME)}-byte frames, best of 5, CPU per send:")
    print(f"  socket.send          {raw:6.2f} us")
    print(f"  uvloop transport     {via_uvloop:6.2f} us")
    print(f"  => at most {1e6 / raw:,.0f} sends per CPU-second here, whatever the server")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
