"""The event log interface: what every storage backend promises.

The log is the single source of truth. Sources (HTTP publish, PostgreSQL) call
:meth:`EventLog.append`; the hub learns about events only through the listeners
registered with :meth:`EventLog.add_listener`, which run *after* the events are
durable in the backend. Travel (replay) reads go through :meth:`EventLog.travel`.

Invariants (see docs/protocol.md): seq is per channel, starts at 1, grows by one,
is never reused; ts_ms never decreases within a channel; an acknowledged append
survives a restart; retention only drops the oldest events.

The interface has two halves, the way Centrifuge separates history from its broker:

* *history* -- :meth:`EventLog.append`, :meth:`EventLog.read_channel` /
  :meth:`EventLog.travel`, :meth:`EventLog.bounds`, retention: what is stored;
* *live delivery* -- the listeners of :meth:`EventLog.add_listener`: who hears of
  appended events, in seq order per channel.

A single-process store (memory, sqlite: ``shared = False``) delivers only the appends
of this process, at once, and its ``bounds()`` is exact: it is the only writer. A
shared store (Redis: ``shared = True``) is written by several processes: it delivers
every process's appends to its listeners (each event once, in seq order per channel),
its ``bounds()`` is this process's view -- what it has delivered so far, which may lag
the store by the delivery latency -- and :meth:`EventLog.refresh_bounds` brings that
view up to the store before a travel.

Backends implement three small hooks (``_append_batches``, ``_read_channel`` and
``_bounds``); the travel selection (cursor vs. tail, multi-channel merge, limit,
``has_more`` and ``gaps``) is shared in :mod:`athena_cdc.log.travel` so that every
backend answers a travel the same way. Seq and ts are assigned inside the backend
so that a remote backend (Redis Streams) can assign them atomically on its side.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from athena_cdc.log.epoch import new_epoch
from athena_cdc.protocol.frames import frame_header_length, text_frame
from athena_cdc.protocol.messages import encode_event

if TYPE_CHECKING:
    from athena_cdc.log.travel import TravelReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its channel and its payload, already JSON-encoded."""

    channel: str
    payload: bytes


class Event(NamedTuple):
    """An event in the log.

    ``frame`` is the complete WebSocket text frame of the server message
    ``{"organization_id":...,"data":{"seq":...,"ts_ms":...,"payload":...}}``, built
    once when the event is appended: server frames are unmasked, so these exact bytes
    go to every subscriber and every replay without encoding anything again.

    A named tuple: twice as fast to build as a frozen dataclass, which matters when a
    travel of 50,000 events rebuilds them from a ring or from disk.
    """

    channel: str
    seq: int
    ts_ms: int
    frame: bytes

    @classmethod
    def build(cls, channel: str, seq: int, ts_ms: int, payload: bytes) -> Event:
        return cls(channel, seq, ts_ms, text_frame(encode_event(channel, seq, ts_ms, payload)))

    @property
    def message(self) -> bytes:
        """The JSON message inside the frame."""
        return self.frame[frame_header_length(self.frame) :]


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """How far a source has been applied, recorded atomically with its events.

    ``source`` names the source (e.g. ``postgres:athena_cdc``), ``position`` is an
    opaque string the source understands (e.g. an LSN).
    """

    source: str
    position: str
    # Where the source believes the log is before this batch (compare-and-set): a shared
    # store refuses the batch with StalePosition when its stored position is beyond it,
    # i.e. another writer (a new leader, or a stale one) appended meanwhile. None: no check.
    after: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelBounds:
    """What the log knows of one channel's extent.

    ``first_seq`` is the oldest retained seq (``last_seq + 1`` when nothing is
    retained), ``last_seq`` the newest ever assigned (0 for a new channel), and
    ``dropped_ts_ms`` the ts of the newest event retention has dropped (None if
    none was dropped) -- used to tell whether a time-based travel lost events.
    """

    first_seq: int
    last_seq: int
    dropped_ts_ms: int | None = None


EMPTY_BOUNDS = ChannelBounds(first_seq=1, last_seq=0)


@dataclass(frozen=True, slots=True)
class TravelQuery:
    channels: tuple[str, ...]
    since_seq: int | None
    since_ts_ms: int | None
    limit: int
    # Per channel, the newest seq the travel may return: the last seq the connection
    # had been sent live when the travel began. Later events reach it live, after the
    # ack, so a slow (disk) read can never send them out of order.
    until_seq: Mapping[str, int] | None = None

    def upper(self, channel: str) -> int | None:
        return None if self.until_seq is None else self.until_seq.get(channel)

    @property
    def has_cursor(self) -> bool:
        """With a cursor the oldest matching events are chosen, else the newest."""
        return self.since_seq is not None or self.since_ts_ms is not None


@dataclass(frozen=True, slots=True)
class Gap:
    channel: str
    from_seq: int
    to_seq: int


@dataclass(slots=True)
class TravelResult:
    events: list[Event]  # oldest first
    has_more: bool
    gaps: list[Gap] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LogStats:
    channels: int
    events: int
    bytes: int


AppendListener = Callable[[Sequence[Event]], None]


class StoreConfigError(Exception):
    """The store cannot give what the settings ask (a server too old for a durability
    mode, an address that does not answer); the message is one line saying so."""


class StorageUnavailable(Exception):
    """The backend cannot take writes or reads right now (disk full, I/O error...)."""


class StalePosition(StorageUnavailable):
    """A source position not beyond the stored one, or a stored one beyond the batch's
    ``after``: a stale writer's late append, refused whole. Retrying cannot succeed."""


class EventLog(abc.ABC):
    """A set of per-channel, append-only, retained event logs."""

    name: str = "abstract"
    # Whether several processes share this log (see the module docstring).
    shared: bool = False

    def __init__(self) -> None:
        self._listeners: list[AppendListener] = []
        # Invariant 6: a short random string fixed when the log is created; it changes
        # whenever the log's seqs could restart. Sent in "subscribed" and every
        # "travel_complete". A log that lives in this process only gets a new one per
        # start (this default); a durable backend sets its stored epoch in open().
        self.epoch: str = new_epoch()

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:  # noqa: B027 - optional hook
        """Open storage, recover state. Called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what is pending and release resources."""

    def add_listener(self, listener: AppendListener) -> None:
        """Call ``listener(events)`` after each durable append, in seq order per channel.

        Live delivery: a single-process store calls it for this process's appends; a
        shared store for every process's appends (each event once)."""
        self._listeners.append(listener)

    def _notify(self, events: Sequence[Event]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a faulty listener must not break the log
                log.exception("append listener failed")

    # -- writes ----------------------------------------------------------------------
    @abc.abstractmethod
    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        """Append ``batch`` atomically (all or none); return the events in input order.

        Returns only once the events are durable for this backend. ``position`` is
        stored in the same durable write, for exactly-once sources.
        """

    def start_append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> asyncio.Future[list[Event]]:
        """:meth:`append`, begun now (it joins the store's queue before any later call),
        as a future: the WebSocket ``publish`` path answers from its outcome without a
        task per message. Stores override it when they can do better than a task."""
        return asyncio.ensure_future(self.append(batch, position))

    @abc.abstractmethod
    async def get_position(self, source: str) -> str | None:
        """The last position recorded for ``source`` with :meth:`append`, if any."""

    # -- reads -----------------------------------------------------------------------
    @abc.abstractmethod
    def bounds(self, channel: str) -> ChannelBounds:
        """Extent of ``channel`` as seen by this process (cheap, no I/O).

        ``last_seq`` is the newest seq this process's listeners have been given: a
        travel that ends there and the live events after it meet exactly."""

    async def refresh_bounds(self, channels: Sequence[str]) -> None:  # noqa: B027
        """Bring :meth:`bounds` of ``channels`` up to the store (a shared store delivers
        to the listeners whatever it finds they missed, first). Nothing to do for a
        single-process store, whose bounds are always exact."""

    @abc.abstractmethod
    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        """Up to ``limit`` events of one channel, oldest first.

        Events with ``seq > since_seq``, ``ts_ms >= since_ts_ms`` and
        ``seq <= until_seq`` (each when given); the newest ``limit`` of them if
        ``newest`` else the oldest ``limit``.
        """

    async def travel(self, query: TravelQuery) -> TravelResult:
        """A travel's whole answer (see :meth:`travel_reader` to answer page by page)."""
        from athena_cdc.log.travel import run_travel

        return await run_travel(self, query)

    def travel_reader(self, query: TravelQuery) -> TravelReader:
        """A travel's answer page by page, so the first pages go out while later ones
        are read."""
        from athena_cdc.log.travel import TravelReader

        return TravelReader(self, query)

    @abc.abstractmethod
    async def prune(self) -> int:
        """Apply retention now (it also runs in the background); return events dropped."""

    @abc.abstractmethod
    def stats(self) -> LogStats:
        """Size of what is retained (for /metrics)."""

    def health(self) -> str | None:
        """None when the backend is usable, else a reason (for /ready)."""
        return None
