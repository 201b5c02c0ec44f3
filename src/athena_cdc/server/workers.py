"""``--workers N``: N processes serve one port; a supervisor starts, watches and stops them.

The process started as ``athena-cdc serve --workers N`` is the *supervisor*. It serves
no HTTP itself; it

* owns what must exist once: the memory or sqlite log (served to the workers over a
  Unix socket in a private temporary directory, :mod:`athena_cdc.log.remote`) and the
  ``--source`` readers -- with a Redis store the workers share Redis as independent
  nodes, and the link only carries readiness and the sources' status;
* starts N workers (``python -m athena_cdc.server.workers``, settings on stdin), each a
  full server on the same port with ``SO_REUSEPORT`` (the kernel spreads connections);
* restarts a worker that died, with a growing delay, and logs it;
* on SIGTERM/SIGINT forwards SIGTERM (workers drain: clients closed with 1001), waits
  for them, then stops the sources and closes the log; SIGHUP is forwarded (JWKS reload).

A worker whose link to the supervisor breaks (the supervisor died) drains and exits:
it never serves a log it can no longer hear.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from athena_cdc.config import Settings
from athena_cdc.log.base import EventLog, StorageUnavailable
from athena_cdc.log.remote import LogServer, OwnerLink

log = logging.getLogger(__name__)

WORKER_HEADER = "X-Athena-Worker"  # which worker answered (1..N), on every response
START_TIMEOUT = 60.0  # seconds for every worker to listen, at start
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # after consecutive early deaths
STABLE_AFTER = 30.0  # a worker up this long resets the delay
KILL_AFTER = 10.0  # seconds past --shutdown-timeout before a draining worker is killed


@dataclass(frozen=True)
class WorkerRole:
    """What makes a server one of the workers: its number and its link to the supervisor."""

    index: int
    link: OwnerLink

    @property
    def response_headers(self) -> dict[str, str]:
        """Added to every response of this worker (also by the publish lane's)."""
        return {WORKER_HEADER: str(self.index)}

    async def name_response(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self.response_headers)


# -- the worker process ------------------------------------------------------------------


async def run_worker(settings: Settings, stop: asyncio.Event, socket_path: str, index: int) -> int:
    """Serve as worker ``index`` until ``stop`` (or the supervisor is gone: exit 1)."""
    from athena_cdc.server.app import serve

    _name_logs(index)
    link = OwnerLink(socket_path)
    try:
        await link.connect()
    except StorageUnavailable as exc:
        log.error("%s", exc)
        return 1
    lost = False

    def on_lost() -> None:
        nonlocal lost
        lost = True
        log.error("the supervisor is gone (link to the log closed): this worker stops")
        stop.set()

    link.on_lost = on_lost
    supervisor = os.getppid()
    await serve(settings, stop, WorkerRole(index, link))
    if lost and await _orphaned(supervisor):
        # The supervisor died without removing its private directory: its workers do
        # (while it lives, the directory is its own business).
        shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)
    return 1 if lost else 0


async def _orphaned(supervisor: int) -> bool:
    """Whether the supervisor is dead: this process got another parent. (A dying
    process's sockets close before its children are handed on: wait a moment.)"""
    for _ in range(40):
        if os.getppid() != supervisor:
            return True
        await asyncio.sleep(0.05)
    return False


def _name_logs(index: int) -> None:
    """Prefix this worker's log lines with its number (they share the supervisor's stderr)."""

    def name(record: logging.LogRecord) -> bool:
        record.name = f"worker {index} {record.name}"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(name)


def worker_main(argv: list[str]) -> int:
    """``python -m athena_cdc.server.workers SOCKET INDEX`` with the settings on stdin."""
    from athena_cdc.cli import run_server

    socket_path, index = argv[0], int(argv[1])
    settings = Settings(**orjson.loads(sys.stdin.buffer.read()))
    return run_server(settings, worker=(socket_path, index))


# -- the supervisor ----------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    early_deaths: int = 0


class Supervisor:
    def __init__(self, settings: Settings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.workers = [_Worker(i) for i in range(1, settings.workers + 1)]
        self.port = settings.port
        self.log: EventLog | None = None
        self._dir = ""
        self._reserved: socket.socket | None = None
        self._port_lock: socket.socket | None = None
        self._stopping = False

    @property
    def shares_store(self) -> bool:
        """Whether the workers reach the log through this process (memory, sqlite)."""
        return self.settings.store in ("memory", "sqlite")

    async def run(self) -> int:
        from athena_cdc.metrics import Metrics
        from athena_cdc.server.app import make_log, make_sources

        settings = self.settings
        self._reserve_port()
        # Private: only this user may reach the log (the directory is mode 0700).
        self._dir = tempfile.mkdtemp(prefix="athena-cdc-workers-")
        server: LogServer | None = None
        try:
            if self.shares_store or settings.source:
                self.log = make_log(settings)
                await self.log.open()
            # (their metrics reach the workers' /metrics through the link's status)
            sources = make_sources(settings, self.log, Metrics()) if self.log else []
            server = LogServer(
                os.path.join(self._dir, "log.sock"),
                self.log if self.shares_store else None,
                sources,
                on_ready=self._on_ready,
            )
            await server.start()
            code = await self._start_workers(server.path)
            if code is not None:
                if code == 0:
                    # Stopped while starting: the workers already listening may serve
                    # clients (the port is shared), which get their 1001 and answers;
                    # the others are still starting and are killed (at once).
                    await self._drain(ready_only=True)
                return code
            for source in sources:
                await source.start()
            log.info(
                "athena-cdc: %d workers on %s:%d (pids %s), store %s",
                len(self.workers),
                settings.host,
                self.port,
                ", ".join(str(w.proc.pid) for w in self.workers if w.proc),
                "redis" if not self.shares_store else settings.store,
            )
            watchers = [
                asyncio.create_task(self._watch(w, server.path), name=f"worker-{w.index}")
                for w in self.workers
            ]
            await self.stop.wait()
            await self._drain()
            for task in watchers:
                task.cancel()
            for source in sources:
                try:
                    await source.stop()
                except Exception:
                    log.exception("stopping source %s failed", source.name)
            return 0
        finally:
            self._stopping = True
            self._kill_all()
            if server is not None:
                await server.stop()
            if self.log is not None:
                await self.log.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            for sock in (self._reserved, self._port_lock):
                if sock is not None:
                    sock.close()
            log.info("stopped")

    def _reserve_port(self) -> None:
        """Bind the port (SO_REUSEPORT, not listening) before any worker: a port in use
        fails here with the usual one line, and port 0 becomes one port for all."""
        host = self.settings.host
        family, kind, proto, _, address = socket.getaddrinfo(
            host, self.settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._reserved = sock
        self.port = sock.getsockname()[1]
        self._port_lock = _claim_port(self.port)

    def _on_ready(self, index: int, pid: int) -> None:
        for worker in self.workers:
            if worker.index == index and worker.proc is not None and worker.proc.pid == pid:
                worker.ready.set()

    async def _spawn(self, worker: _Worker, socket_path: str) -> None:
        settings = dataclasses.replace(self.settings, port=self.port, workers=1)
        worker.ready.clear()
        # Its own session: a Ctrl-C in the terminal reaches the supervisor only, which
        # forwards it once (a worker that got it twice would stop without draining).
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "athena_cdc.server.workers",
            socket_path,
            str(worker.index),
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None
        # The settings hold secrets (JWT, publish key): a pipe, not argv or a file.
        proc.stdin.write(orjson.dumps(dataclasses.asdict(settings)))
        proc.stdin.close()
        worker.proc = proc
        worker.started_at = time.monotonic()

    async def _start_workers(self, socket_path: str) -> int | None:
        """Start every worker and wait until each listens; an exit code if one cannot."""
        for worker in self.workers:
            # A SIGTERM or Ctrl-C while they start stops here, not after the last one.
            if self.stop.is_set():
                return 0
            await self._spawn(worker, socket_path)
        readies: dict[asyncio.Task[object], _Worker] = {
            asyncio.create_task(w.ready.wait()): w for w in self.workers
        }
        exits: dict[asyncio.Task[object], _Worker] = {
            asyncio.create_task(self._exited(w)): w for w in self.workers
        }
        stop_wait = asyncio.create_task(self.stop.wait())
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while readies:
                done, _ = await asyncio.wait(
                    [*readies, *exits, stop_wait],
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    log.error("workers did not start within %.0f s: stopping", START_TIMEOUT)
                    return 1
                if stop_wait in done:
                    return 0
                for task in done:
                    if task in readies:
                        del readies[task]
                    elif task in exits:
                        worker = exits.pop(task)
                        assert worker.proc is not None and worker.proc.returncode is not None
                        code = worker.proc.returncode
                        log.error(
                            "worker %d %s while starting: stopping",
                            worker.index,
                            _describe_exit(code),
                        )
                        return 2 if code == 2 else 1
            return None
        finally:
            for task in [*readies, *exits, stop_wait]:
                task.cancel()

    @staticmethod
    async def _exited(worker: _Worker) -> int:
        assert worker.proc is not None
        return await worker.proc.wait()

    async def _watch(self, worker: _Worker, socket_path: str) -> None:
        """Restart ``worker`` whenever it dies, waiting longer after each early death."""
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self._stopping or self.stop.is_set():
                return
            lived = time.monotonic() - worker.started_at
            worker.early_deaths = 0 if lived >= STABLE_AFTER else worker.early_deaths + 1
            delay = RESTART_DELAYS[min(max(worker.early_deaths - 1, 0), len(RESTART_DELAYS) - 1)]
            log.warning(
                "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                worker.index,
                worker.proc.pid,
                _describe_exit(code),
                lived,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping or self.stop.is_set():
                return
            await self._spawn(worker, socket_path)

    async def _drain(self, *, ready_only: bool = False) -> None:
        """SIGTERM to every worker (each closes its clients with 1001 and finishes its
        requests), then wait; a worker still running after the grace time is killed.
        ``ready_only``: only those that said they listen."""
        self._stopping = True
        running = [
            w.proc
            for w in self.workers
            if w.proc and w.proc.returncode is None and (w.ready.is_set() or not ready_only)
        ]
        log.info("draining %d workers", len(running))
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_timeout + KILL_AFTER
        waits = [asyncio.create_task(proc.wait()) for proc in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace)
            if late:
                log.warning("%d workers still running after %.0f s: killing them", len(late), grace)
                self._kill_all()
                await asyncio.wait(late, timeout=5)

    def forward(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    def _kill_all(self) -> None:
        self.forward(signal.SIGKILL)


def _claim_port(port: int) -> socket.socket | None:
    """Hold a lock named after the port, so that a second supervisor on the same port
    fails (EADDRINUSE) instead of joining it: SO_REUSEPORT would let its workers share
    the port with ours, each group serving a log of its own.

    The lock is a Unix socket in Linux's abstract namespace: no file to clean up, and it
    goes with the process, however it dies. (Elsewhere: no lock.)"""
    if not sys.platform.startswith("linux"):
        return None
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0athena-cdc-port-{port}")
    except OSError:
        lock.close()
        raise
    return lock


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def supervise(settings: Settings, stop: asyncio.Event) -> int:
    """Run ``settings.workers`` workers until ``stop``; the process's exit code."""
    supervisor = Supervisor(settings, stop)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, supervisor.forward, signal.SIGHUP)
    try:
        return await supervisor.run()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
