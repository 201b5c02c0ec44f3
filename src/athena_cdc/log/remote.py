"""One event log served to the worker processes of ``--workers N`` over a Unix socket.

The memory and sqlite stores live in one process: the supervisor (the *log owner*). It
opens the store, runs the ``--source`` readers, and serves each worker over a Unix
stream socket (:class:`LogServer`); each worker's :class:`RemoteLog` is an
:class:`EventLog` like any other to its hub, WebSocket and publish endpoints.

The link carries MessagePack arrays, one after another (the unpacker finds where each
ends), in both directions:

* worker → owner: requests ``[kind, id, ...]`` -- ``append`` (a batch: all or nothing),
  ``read`` (one ``read_channel`` call, for travels), ``bounds`` (of some channels),
  ``position``, ``prune`` -- and ``["ready", index, pid]`` once the worker listens;
* owner → worker: ``["ok", id, result]`` / ``["err", id, message]``; ``["events",
  [[channel, seq, ts_ms, frame], ...]]`` for every append of the log, whoever made it,
  encoded once for all workers; ``["status", ...]`` every second (epoch, health, sizes,
  the sources' counters).

Why this is enough for the guarantees of one process: a Unix stream socket delivers
bytes in order and never drops any, and the owner writes each batch of events to the
link from its log's listener -- before the ``ok`` of the append that made it, and
before the answer to any ``bounds`` asked after it. So a worker hands its hub every
event once, in seq order, with no gap, and a ``bounds`` answer is exact when it is read:
the worker has delivered precisely what it says. A worker whose link breaks stops
(see :mod:`athena_cdc.server.workers`): it never serves from a log it no longer hears.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, cast

import msgpack

from athena_cdc.log.base import (
    EMPTY_BOUNDS,
    ChannelBounds,
    Event,
    EventLog,
    LogStats,
    NewEvent,
    SourcePosition,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0  # seconds between status messages to the workers
CONNECT_TIMEOUT = 10.0
# A worker that stops reading (a hung event loop) would make the owner buffer every
# event for it: past this, its link is cut (it exits and the supervisor restarts it).
MAX_WORKER_BACKLOG = 256 * 1024**2
# The largest message either side accepts: a read of MAX_READ events of the largest
# payload fits (travel reads are paged: athena_cdc.log.travel).
MAX_MESSAGE_BYTES = 2**31 - 1
# Channels whose bounds a worker keeps (those a travel asked for lately).
MAX_VIEWS = 100_000
BOUNDS_CHUNK = 256  # channels looked up between two yields to the owner's loop


def _packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=MAX_MESSAGE_BYTES)


def _events(rows: Sequence[Sequence[Any]]) -> list[Event]:
    return [Event(channel, seq, ts_ms, frame) for channel, seq, ts_ms, frame in rows]


@dataclass(slots=True)
class RemoteSourceStats:
    """A source's counters as the owner last reported them (for the worker's /metrics;
    the fields of :class:`athena_cdc.metrics.SourceStats`)."""

    name: str
    rows_applied: int = 0
    rows_skipped: int = 0
    rows_unroutable: int = 0
    transactions: int = 0
    reconnects: int = 0
    append_failures: int = 0
    last_commit_lag_seconds: float | None = None
    leader: bool = False


_SOURCE_FIELDS = (
    "name",
    "rows_applied",
    "rows_skipped",
    "rows_unroutable",
    "transactions",
    "reconnects",
    "append_failures",
    "last_commit_lag_seconds",
    "leader",
)


# -- owner side ----------------------------------------------------------------------


class LogServer:
    """Serves ``event_log`` (None: the workers have a store of their own, e.g. Redis, and
    the link only carries readiness and status) to the workers on ``path``."""

    def __init__(
        self,
        path: str,
        event_log: EventLog | None,
        sources: Sequence[Any] = (),
        on_ready: Callable[[int, int], None] = lambda index, pid: None,
    ) -> None:
        self.path = path
        self.log = event_log
        self.sources = sources  # with .name, .health() and the SourceStats counters
        self.on_ready = on_ready
        self.links: set[_WorkerLink] = set()
        self._server: asyncio.AbstractServer | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._packer = _packer()
        if event_log is not None:
            event_log.add_listener(self._broadcast)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _WorkerLink(self), self.path)
        os.chmod(self.path, 0o600)
        self._status_task = asyncio.create_task(self._status_forever(), name="log-server-status")

    async def stop(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def _broadcast(self, events: Sequence[Event]) -> None:
        """The log's listener: every worker hears every append, encoded once."""
        if not self.links:
            return
        data = self._packer.pack(("events", events))
        for link in list(self.links):
            link.write(data)

    def status_message(self) -> bytes:
        log_health = self.log.health() if self.log is not None else None
        problems = [p for source in self.sources if (p := source.health())]
        stats = astuple(self.log.stats()) if self.log is not None else None
        sources = [[getattr(s, name) for name in _SOURCE_FIELDS] for s in self.sources]
        epoch = self.log.epoch if self.log is not None else None
        message: bytes = self._packer.pack(
            ("status", epoch, log_health, "; ".join(problems) or None, stats, sources)
        )
        return message

    async def _status_forever(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            if self.links:
                data = self.status_message()
                for link in list(self.links):
                    link.write(data)

    async def answer(self, link: _WorkerLink, message: tuple[Any, ...]) -> None:
        kind, request_id = message[0], message[1]
        try:
            result = await self._run(kind, message[2:])
        except StorageUnavailable as exc:
            link.write(self._packer.pack(("err", request_id, str(exc))))
        except Exception as exc:
            log.exception("worker request %s failed", kind)
            link.write(self._packer.pack(("err", request_id, f"the log failed: {exc}")))
        else:
            link.write(self._packer.pack(("ok", request_id, result)))

    async def _run(self, kind: str, args: tuple[Any, ...]) -> Any:
        event_log = self.log
        if event_log is None:
            raise StorageUnavailable("this supervisor serves no log")
        if kind == "append":
            items, position = args
            batch = [NewEvent(channel, payload) for channel, payload in items]
            where = SourcePosition(*position) if position is not None else None
            return [(e.seq, e.ts_ms) for e in await event_log.append(batch, where)]
        if kind == "read":
            return await event_log.read_channel(*args)
        if kind == "bounds":
            found = []
            for number, channel in enumerate(args[0], 1):
                b = event_log.bounds(channel)
                found.append((b.first_seq, b.last_seq, b.dropped_ts_ms))
                if number % BOUNDS_CHUNK == 0:
                    await asyncio.sleep(0)
            return found
        if kind == "position":
            return await event_log.get_position(args[0])
        if kind == "prune":
            return await event_log.prune()
        raise StorageUnavailable(f"unknown request {kind!r}")


class _WorkerLink(asyncio.Protocol):
    """The owner's end of one worker's link."""

    def __init__(self, server: LogServer) -> None:
        self.server = server
        self.transport: asyncio.WriteTransport
        self._unpacker = _unpacker()
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # (uvloop's is no subclass)
        self.server.links.add(self)
        self.write(self.server.status_message())

    def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WORKER_BACKLOG:
            log.error(
                "a worker reads nothing (%d bytes queued): cutting its link", MAX_WORKER_BACKLOG
            )
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
            for message in self._unpacker:
                if message[0] == "ready":
                    self.server.on_ready(message[1], message[2])
                    continue
                task = asyncio.ensure_future(self.server.answer(self, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:  # not our protocol: this link is of no use
            log.exception("a worker sent what the log server cannot read: cutting its link")
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.links.discard(self)
        # An append already handed to the log completes (it is durable, the worker
        # just never answers its producer); nothing else is worth finishing.


# -- worker side ---------------------------------------------------------------------


class OwnerLink(asyncio.Protocol):
    """A worker's end of its link to the log owner."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: asyncio.WriteTransport | None = None
        self.epoch: str | None = None
        self.log_problem: str | None = None
        self.source_problem: str | None = None
        self.stats = LogStats(0, 0, 0)
        self.sources: list[RemoteSourceStats] = []  # updated in place (metrics read it)
        self.on_events: Callable[[list[Event]], None] = lambda events: None
        self.on_lost: Callable[[], None] = lambda: None
        self.lost = False
        self._closing = False
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Any], Any] | None]] = {}
        self._unpacker = _unpacker()
        self._packer = _packer()
        self._first_status: asyncio.Future[None] | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._first_status = loop.create_future()
        try:
            await asyncio.wait_for(loop.create_unix_connection(lambda: self, self.path), 5)
            await asyncio.wait_for(self._first_status, CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot reach the log owner at {self.path}: {exc}") from None

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def ready(self, index: int) -> None:
        """Tell the supervisor this worker listens."""
        self._write(("ready", index, os.getpid()))

    def health(self) -> str | None:
        if self.lost:
            return "the link to the log owner (the supervisor) is lost"
        return self.log_problem

    def source_health(self) -> str | None:
        """The problems of the supervisor's --source readers, if any."""
        return self.source_problem

    def request(
        self, kind: str, *args: Any, on_reply: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        """Send a request; its future gets ``on_reply(result)`` (or the result), computed
        when the answer is read -- in order with the events read before it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.lost or self.transport is None:
            future.set_exception(StorageUnavailable(self.health() or "not connected"))
            return future
        request_id = next(self._ids)
        self._pending[request_id] = (future, on_reply)
        self._write((kind, request_id, *args))
        return future

    def _write(self, message: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._packer.pack(message))

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
            for message in self._unpacker:
                self._dispatch(message)
        except Exception:  # a worker that misread the log must not serve from it
            log.exception("cannot read the log owner's messages: closing the link")
            assert self.transport is not None
            self.transport.abort()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "events":
            self.on_events(_events(message[1]))
        elif kind == "ok":
            future, on_reply = self._pending.pop(message[1])
            if not future.done():
                result = message[2]
                future.set_result(on_reply(result) if on_reply else result)
        elif kind == "err":
            future, _ = self._pending.pop(message[1])
            if not future.done():
                future.set_exception(StorageUnavailable(message[2]))
        elif kind == "status":
            self._status(*message[1:])

    def _status(
        self,
        epoch: str | None,
        log_problem: str | None,
        source_problem: str | None,
        stats: Sequence[int] | None,
        sources: Sequence[Sequence[Any]],
    ) -> None:
        self.epoch = epoch
        self.log_problem, self.source_problem = log_problem, source_problem
        if stats is not None:
            self.stats = LogStats(*stats)
        self.sources[:] = [RemoteSourceStats(*values) for values in sources]
        if self._first_status is not None and not self._first_status.done():
            self._first_status.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(StorageUnavailable(self.health() or "link lost"))
        self._pending.clear()
        if self._first_status is not None and not self._first_status.done():
            self._first_status.set_exception(OSError("the log owner closed the link"))
        if not self._closing:
            self.on_lost()


@dataclass(slots=True)
class _View:
    """What this worker knows of a channel a travel asked for."""

    first: int
    last: int
    dropped_ts: int | None


class RemoteLog(EventLog):
    """The owner's log, seen from a worker: reads and appends go over the link, and
    every append of the log (any worker's, or a source's) reaches this worker's
    listeners once, in seq order.

    ``bounds()`` is this worker's view, exact after :meth:`refresh_bounds` and kept up to
    date by the events that follow, for the channels travels asked for lately.
    """

    name = "remote"
    shared = True

    def __init__(self, link: OwnerLink, *, retention_events: int = 100_000) -> None:
        super().__init__()
        self.link = link
        self._retention_events = retention_events
        self._views: collections.OrderedDict[str, _View] = collections.OrderedDict()
        link.on_events = self._deliver

    async def open(self) -> None:
        if self.link.epoch is not None:
            self.epoch = self.link.epoch

    async def close(self) -> None:
        self.link.close()

    def _deliver(self, events: list[Event]) -> None:
        views = self._views
        if views:
            for event in events:
                view = views.get(event.channel)
                if view is not None:
                    view.last = event.seq
                    view.first = max(view.first, event.seq - self._retention_events + 1)
        self._notify(events)

    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        if not batch:
            return []
        where = None if position is None else (position.source, position.position, position.after)
        items = [(item.channel, item.payload) for item in batch]
        assigned = await self.link.request("append", items, where)
        build = Event.build
        return [
            build(item.channel, seq, ts_ms, item.payload)
            for item, (seq, ts_ms) in zip(batch, assigned, strict=True)
        ]

    async def get_position(self, source: str) -> str | None:
        result: str | None = await self.link.request("position", source)
        return result

    def bounds(self, channel: str) -> ChannelBounds:
        view = self._views.get(channel)
        if view is None:
            return EMPTY_BOUNDS
        return ChannelBounds(min(view.first, view.last + 1), view.last, view.dropped_ts)

    async def refresh_bounds(self, channels: Sequence[str]) -> None:
        names = list(dict.fromkeys(channels))
        if names:
            await self.link.request("bounds", names, on_reply=lambda rows: self._keep(names, rows))

    def _keep(self, names: list[str], found: Sequence[Sequence[Any]]) -> None:
        """Called as the answer is read: after every event the owner sent before it, so
        the bounds are exactly what this worker has delivered."""
        views = self._views
        for name, (first, last, dropped_ts) in zip(names, found, strict=True):
            views[name] = _View(first, last, dropped_ts)
            views.move_to_end(name)
        # Least recently asked first; never those of this answer (the travel reads them).
        while len(views) > max(MAX_VIEWS, len(names)):
            views.popitem(last=False)

    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        rows = await self.link.request(
            "read", channel, since_seq, since_ts_ms, limit, newest, until_seq, on_reply=_events
        )
        events: list[Event] = rows
        return events

    async def prune(self) -> int:
        dropped: int = await self.link.request("prune")
        return dropped

    def stats(self) -> LogStats:
        return self.link.stats

    def health(self) -> str | None:
        return self.link.health()
