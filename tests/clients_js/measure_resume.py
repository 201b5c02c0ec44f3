"""How long the JS client takes to be caught up again after a server restart.

Not a test (it asserts only that nothing was lost): a measurement, run by hand once
clients/js has its dev dependencies (`npm ci` there, as the tests do).

    .venv/bin/python -m tests.clients_js.measure_resume [--missed 1000 10000 50000]

For each count: a sqlite server and a client that is live on one channel; the client is
frozen (SIGSTOP), the server killed (-9) and restarted, that many events published, and the
client let go. Reported: from the client noticing the close to live again (the reconnection
delay included), and from the server's `subscribed` to live (the catch-up alone).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from pathlib import Path

from tests.clients_js._support import publish_to, start_js_client
from tests.protocol._support import event
from tests.support.servers import ServerProcess
from tests.support.toolchain import node_and_npm

PAYLOAD = {"pad": "x" * 100}


async def measure(node: str, missed: int, page_size: int) -> str:
    with (
        tempfile.TemporaryDirectory() as data,
        ServerProcess(["--store", "sqlite", "--data-dir", str(Path(data) / "data")]) as server,
    ):
        client = await start_js_client(
            node,
            url=server.ws,
            client="m",
            pageSize=page_size,
            backoff={"initialMs": 500, "maxMs": 30_000},  # the defaults
            subscribe=[{"channel": "m", "sinceSeq": 0}],
        )
        try:
            await client.next(lambda line: line["type"] == "state" and line["state"] == "live")
            client.proc.send_signal(signal.SIGSTOP)
            server.kill()
            server.start()
            for start in range(0, missed, 5_000):
                size = min(5_000, missed - start)
                await publish_to(server.base, [event("m", PAYLOAD)] * size)
            client.proc.send_signal(signal.SIGCONT)
            await client.wait_for_seqs({"m": missed}, within=300)
            live = await client.next(
                lambda line: line["type"] == "state" and line["state"] == "live"
            )
            await client.close()
        finally:
            if client.proc.returncode is None:
                client.proc.kill()
                await client.proc.wait()
    assert client.seqs("m") == list(range(1, missed + 1))
    noticed = client.of_type("disconnect")[0]["atMs"]
    hello = client.of_type("connect")[-1]["atMs"]
    return (
        f"{missed:>7} events missed: live again {live['atMs'] - noticed:>5} ms after the "
        f"close ({live['atMs'] - hello:>5} ms of catch-up after `subscribed`)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missed", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--page-size", type=int, default=5_000)
    args = parser.parse_args()
    node = node_and_npm()[0][0]
    for missed in args.missed:
        print(await measure(node, missed, args.page_size))


if __name__ == "__main__":
    asyncio.run(main())
