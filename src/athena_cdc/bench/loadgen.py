"""Load generator: many ``picows`` WebSocket clients spread over worker processes.

Each worker process runs one uvloop event loop holding its share of the connections and
answers commands sent by the orchestrator over a pipe (``connect``, ``reset``, ``wait``,
``stats``, ``travel``, ``close``). A client does as little per frame as it can: in
``count`` mode it counts frames and keeps the last one (its seq is checked at the end); in
``parse`` mode it decodes each event with orjson, checks that seqs follow each other and
records the publish -> receive latency from the ``t`` field (``time.time_ns() // 1000`` at
publish; same machine, same clock). ``parse_every=N`` puts one connection in N in parse mode and the
rest in count mode: latency is then sampled on a tenth (say) of the connections, which
sit at random places in the server's fan-out order, and the client costs less CPU. Every
worker reports its own CPU time so a reader can see whether the load generator, not the
server, was the bottleneck.

Clients speak athena-cdc's protocol; the comparison harness (``bench/`` in a checkout)
adds its NATS client by name (``protocol="bench.nats:NatsSubscriber"``), and each event
goes through the same counting and checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import resource
import signal
import time
from array import array
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_connect
from picows.picows import WSFrame

from athena_cdc.bench import auth as bench_auth
from athena_cdc.bench import procstat

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_STATUS_PREFIX = b'{"status"'

Reply = dict[str, Any]


def raise_nofile_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Totals:
    """What one worker saw since the last ``reset``."""

    def __init__(self) -> None:
        self.received = 0
        self.gaps = 0
        self.duplicates = 0
        self.recording = False
        self.latencies_us: array[int] = array("q")
        self.first_ns = 0
        self.last_ns = 0


class Subscriber(WSListener):
    """One connection: waits for ``subscribed``, then counts (and maybe decodes) events."""

    def __init__(self, totals: Totals, parse: bool, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.totals = totals
        self.parse = parse
        self.subscribed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.count = 0
        self.last_seq = 0
        self.last_frame = b""
        self.close_code: int | None = None
        self.transport: WSTransport | None = None
        self.travel_sent_ns = 0
        self.travel_first_ns = 0
        self.travel_done: asyncio.Future[tuple[int, bytes]] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT:
            now = time.time_ns()
            data = frame.get_payload_as_bytes()
            if data.startswith(_STATUS_PREFIX):
                self._on_status(data, now)
                return
            self.on_event(data, now)
        elif kind is _CLOSE:
            # Parsed by hand: picows' WSCloseCode enum has no member for 4008.
            body = frame.get_payload_as_bytes()
            self.close_code = int.from_bytes(body[:2], "big") if len(body) >= 2 else 1005
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_event(self, data: bytes, now: int) -> None:
        """Count one event message (and, in parse mode, check its seq and time it)."""
        totals = self.totals
        self.count += 1
        totals.received += 1
        if not totals.first_ns:
            totals.first_ns = now
        totals.last_ns = now
        if self.travel_sent_ns and not self.travel_first_ns:
            self.travel_first_ns = now
        if self.parse:
            event = orjson.loads(data)["data"]
            seq = event["seq"]
            if self.last_seq and seq != self.last_seq + 1:
                if seq <= self.last_seq:
                    totals.duplicates += 1
                else:
                    totals.gaps += 1
            self.last_seq = seq
            if totals.recording:
                payload = event["payload"]
                if type(payload) is dict and "t" in payload:
                    totals.latencies_us.append(now // 1000 - payload["t"])
        else:
            self.last_frame = data

    def _on_status(self, data: bytes, now: int) -> None:
        if not self.subscribed.done():
            if b'"subscribed"' in data:
                self.subscribed.set_result(now)
            return
        if b'"travel_complete"' in data and self.travel_done and not self.travel_done.done():
            self.travel_done.set_result((now, data))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before subscribed"))

    def final_seq(self) -> int:
        """The seq of the last event received (decoding the kept frame in count mode)."""
        if self.parse or not self.last_frame:
            return self.last_seq
        seq: int = orjson.loads(self.last_frame)["data"]["seq"]
        return seq


PROTOCOLS: dict[str, type[Subscriber]] = {"athena": Subscriber}


def client_class(protocol: str) -> type[Subscriber]:
    """The client for ``protocol``: a name of :data:`PROTOCOLS`, or ``"module:Class"``, a
    :class:`Subscriber` of another protocol imported in the worker (the harness's NATS
    client, ``bench.nats:NatsSubscriber``, which the package does not ship)."""
    if protocol in PROTOCOLS:
        return PROTOCOLS[protocol]
    module, _, name = protocol.partition(":")
    found = getattr(importlib.import_module(module), name)
    if not (isinstance(found, type) and issubclass(found, Subscriber)):
        raise TypeError(f"{protocol!r} is not a Subscriber")
    return found


class Worker:
    """The connections of one worker process and the commands it answers."""

    def __init__(self) -> None:
        self.totals = Totals()
        self.clients: list[Subscriber] = []
        self.cpu_mark = procstat.own_cpu_seconds()

    async def cmd_connect(
        self,
        url: str,
        names: Sequence[str],
        parse_every: int = 1,
        start_at_ns: int = 0,
        concurrency: int = 500,
        handshake_s: float = 60.0,
        protocol: str = "athena",
    ) -> Reply:
        """Open one connection per name; report how long each took to be subscribed."""
        client_type = client_class(protocol)
        if start_at_ns:
            await asyncio.sleep(max(0.0, (start_at_ns - time.time_ns()) / 1e9))
        begin = start_at_ns or time.time_ns()
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        delays_ms: list[float] = []

        async def open_one(index: int, name: str) -> None:
            parse = parse_every > 0 and index % parse_every == 0
            async with gate:
                try:
                    _, client = await ws_connect(
                        lambda: client_type(self.totals, parse, name),
                        url,
                        extra_headers={"X-Athena-Client": name, **bench_auth.headers()},
                        websocket_handshake_timeout=handshake_s,
                        max_frame_size=64 * 1024**2,
                    )
                    assert isinstance(client, Subscriber)
                    done_ns = await asyncio.wait_for(client.subscribed, handshake_s)
                except TimeoutError:
                    # Its message was empty; most likely a server of another kind.
                    errors.append(
                        f"no 'subscribed' message within {handshake_s:g} s "
                        "(is it an athena-cdc server?)"
                    )
                    return
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
            self.clients.append(client)
            delays_ms.append((done_ns - begin) / 1e6)

        await asyncio.gather(*(open_one(i, name) for i, name in enumerate(names)))
        return {
            "connected": len(delays_ms),
            "failed": len(errors),
            "errors": errors[:5],
            "subscribed_ms": delays_ms,
        }

    async def cmd_reset(self) -> Reply:
        self.totals = Totals()
        self.totals.recording = True
        for client in self.clients:
            client.totals = self.totals
            client.count = 0
        self.cpu_mark = procstat.own_cpu_seconds()
        return {}

    async def cmd_wait(self, expected: int, within_s: float) -> Reply:
        """Wait until ``expected`` events arrived since ``reset`` (or ``within_s``)."""
        deadline = time.monotonic() + within_s
        # Polling a counter the frame callback bumps: cheaper than an Event set per frame.
        while self.totals.received < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        return {"reached": self.totals.received >= expected, "received": self.totals.received}

    async def cmd_stats(self, expected: dict[str, int] | None = None) -> Reply:
        """What was received since ``reset``; with ``expected`` (events per channel
        name), also how many clients got fewer or more than their channel's count."""
        totals = self.totals
        counts = [c.count for c in self.clients] or [0]
        short = excess = 0
        if expected is not None:
            for client in self.clients:
                want = expected.get(client.name, 0)
                short += client.count < want
                excess += client.count > want
        closes: dict[int, int] = {}
        for client in self.clients:
            if client.close_code is not None:
                closes[client.close_code] = closes.get(client.close_code, 0) + 1
        seqs = [c.final_seq() for c in self.clients] or [0]
        return {
            "received": totals.received,
            "gaps": totals.gaps,
            "duplicates": totals.duplicates,
            "latencies_us": totals.latencies_us.tobytes(),
            "first_ns": totals.first_ns,
            "last_ns": totals.last_ns,
            "min_count": min(counts),
            "max_count": max(counts),
            "clients_short": short,
            "clients_excess": excess,
            "min_last_seq": min(seqs),
            "max_last_seq": max(seqs),
            "closes": closes,
            "cpu_s": procstat.own_cpu_seconds() - self.cpu_mark,
            "connections": sum(1 for c in self.clients if c.close_code is None),
        }

    async def cmd_travel(self, request: dict[str, Any], within_s: float = 60.0) -> Reply:
        """Send a travel on the first connection; time the first event and the ack."""
        client = self.clients[0]
        assert client.transport is not None
        client.travel_done = asyncio.get_running_loop().create_future()
        client.travel_first_ns = 0
        before = client.count
        client.travel_sent_ns = sent = time.time_ns()
        client.transport.send(_TEXT, orjson.dumps(request))
        ack_ns, ack = await asyncio.wait_for(client.travel_done, within_s)
        first = client.travel_first_ns or ack_ns
        client.travel_sent_ns = 0
        return {
            "first_event_ms": (first - sent) / 1e6,
            "ack_ms": (ack_ns - sent) / 1e6,
            "events": client.count - before,
            "ack": orjson.loads(ack),
        }

    async def cmd_close(self) -> Reply:
        for client in self.clients:
            if client.transport is not None and not client.transport.is_disconnected:
                client.transport.disconnect(graceful=False)
        self.clients.clear()
        self.totals = Totals()
        return {}

    async def cmd_exit(self) -> Reply:
        await self.cmd_close()
        return {}


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the workers start: a spawned process keeps an ignored
    SIGINT ignored (Python then installs no KeyboardInterrupt handler), so a terminal's
    Ctrl-C, which reaches the whole process group, never interrupts a worker's imports
    with a traceback. The orchestrator handles it and tells the workers to exit."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: cannot change it, nor be interrupted
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process: answer commands until ``close``."""
    # A terminal's Ctrl-C reaches the whole process group: the orchestrator handles it
    # (and tells the workers to exit); here it only printed a traceback per worker.
    # (Ignored from the start already, see _sigint_ignored: this is for other starters.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn))
    else:
        uvloop.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker()
    while True:
        try:
            command, args = await loop.run_in_executor(None, conn.recv)
        except EOFError:
            return  # the orchestrator is gone
        try:
            reply = await getattr(worker, "cmd_" + command)(**args)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(reply)
        if command == "exit":
            return


class LoadGen:
    """The orchestrator's handle on the worker processes."""

    def __init__(self, workers: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        with _sigint_ignored():  # inherited: a Ctrl-C while a worker imports is ignored
            for _ in range(workers):
                parent_end, child_end = context.Pipe()
                proc = context.Process(target=worker_main, args=(child_end,), daemon=True)
                proc.start()
                self.pipes.append(parent_end)
                self.procs.append(proc)
        self.assigned: list[list[str]] = [[] for _ in range(workers)]

    @property
    def workers(self) -> int:
        return len(self.pipes)

    async def _call(self, index: int, command: str, **args: Any) -> Reply:
        pipe = self.pipes[index]
        pipe.send((command, args))
        reply: Reply = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        if "error" in reply:
            raise RuntimeError(f"load generator worker {index}: {reply['error']}")
        return reply

    async def _all(
        self, command: str, per_worker: Sequence[dict[str, Any]] | None = None, **args: Any
    ) -> list[Reply]:
        calls = [
            self._call(i, command, **{**args, **(per_worker[i] if per_worker else {})})
            for i in range(self.workers)
        ]
        return list(await asyncio.gather(*calls))

    def split(self, names: Sequence[str]) -> list[list[str]]:
        return [list(names[i :: self.workers]) for i in range(self.workers)]

    async def connect(
        self,
        url: str,
        names: Sequence[str],
        parse_every: int = 1,
        at_once: bool = False,
        handshake_s: float = 60.0,
        protocol: str = "athena",
    ) -> Reply:
        """Connect one client per name, spread round-robin over the workers.

        ``at_once``: every worker starts at the same instant with no concurrency cap
        (the connection storm); otherwise at most 500 handshakes per worker at a time.
        """
        shares = self.split(names)
        for index, share in enumerate(shares):
            self.assigned[index].extend(share)
        start = time.time_ns() + 300_000_000 if at_once else 0
        replies = await self._all(
            "connect",
            [{"names": share} for share in shares],
            url=url,
            parse_every=parse_every,
            start_at_ns=start,
            concurrency=max(1, len(names)) if at_once else 500,
            handshake_s=handshake_s,
            protocol=protocol,
        )
        delays = sorted(d for r in replies for d in r["subscribed_ms"])
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": [e for r in replies for e in r["errors"]][:5],
            "subscribed_ms": delays,
        }

    async def reset(self) -> None:
        await self._all("reset")

    async def wait(self, expected: Sequence[int], within_s: float) -> bool:
        """Wait until each worker received its expected number of events."""
        replies = await self._all("wait", [{"expected": e} for e in expected], within_s=within_s)
        return all(r["reached"] for r in replies)

    def expected_per_worker(self, per_name: dict[str, int]) -> list[int]:
        """Events each worker should receive, given events published per channel name."""
        return [sum(per_name.get(name, 0) for name in share) for share in self.assigned]

    async def stats(self, expected: dict[str, int] | None = None) -> Reply:
        replies = await self._all("stats", expected=expected)
        closes: dict[int, int] = {}
        for reply in replies:
            for code, count in reply["closes"].items():
                closes[code] = closes.get(code, 0) + count
        latencies: array[int] = array("q")
        for reply in replies:
            latencies.frombytes(reply["latencies_us"])
        firsts = [r["first_ns"] for r in replies if r["first_ns"]]
        return {
            "received": sum(r["received"] for r in replies),
            "gaps": sum(r["gaps"] for r in replies),
            "duplicates": sum(r["duplicates"] for r in replies),
            "latencies_us": latencies,
            "first_ns": min(firsts) if firsts else 0,
            "last_ns": max(r["last_ns"] for r in replies),
            "min_count": min(r["min_count"] for r in replies),
            "max_count": max(r["max_count"] for r in replies),
            "clients_short": sum(r["clients_short"] for r in replies),
            "clients_excess": sum(r["clients_excess"] for r in replies),
            "min_last_seq": min(r["min_last_seq"] for r in replies),
            "max_last_seq": max(r["max_last_seq"] for r in replies),
            "closes": closes,
            "client_cpu_s": sum(r["cpu_s"] for r in replies),
            "connections": sum(r["connections"] for r in replies),
        }

    async def travel(self, request: dict[str, Any], within_s: float = 60.0) -> Reply:
        return await self._call(0, "travel", request=request, within_s=within_s)

    async def disconnect(self) -> None:
        """Close every connection; the workers stay up for the next server."""
        await self._all("close")
        self.assigned = [[] for _ in range(self.workers)]

    async def shutdown(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc.is_alive():
                with contextlib.suppress(TimeoutError, RuntimeError, OSError, EOFError):
                    await asyncio.wait_for(self._call(index, "exit"), 10)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
