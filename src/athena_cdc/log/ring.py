"""Per-channel rings of recent events, with a global memory bound.

Used as the whole log by the memory backend and as the cache of recent events by
the sqlite backend. Each channel's events are contiguous in seq, so a seq lookup is
an index computation and a time lookup is a binary search (ts never decreases).

A ring keeps only the events' frames (``bytes``) and their times (an ``array``), not
:class:`Event` objects: neither is tracked by the garbage collector, so millions of
retained events cost a full collection nothing (with an object per event, a full
collection took 0.7 s at 2 M events). Events are rebuilt for the few that a travel
returns.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from itertools import repeat

from athena_cdc.log.base import Event

_new_tuple = tuple.__new__

# Per-event bookkeeping (bytes object header, list slot, ts slot) counted in the bound.
EVENT_OVERHEAD_BYTES = 64


class ChannelRing:
    """The retained events of one channel, oldest first."""

    __slots__ = (
        "_frames",
        "_start",
        "_ts",
        "channel",
        "dropped_ts_ms",
        "first_seq",
        "last_seq",
        "last_ts_ms",
    )

    def __init__(self, channel: str, last_seq: int = 0, last_ts_ms: int = 0) -> None:
        self.channel = channel
        # Lists with a moving start index: append and drop-oldest are O(1) amortised,
        # and a seq maps to an index without walking anything.
        self._frames: list[bytes] = []
        self._ts = array("q")
        self._start = 0
        self.first_seq = last_seq + 1  # seq of the oldest event held
        self.last_seq = last_seq
        self.last_ts_ms = last_ts_ms
        self.dropped_ts_ms: int | None = None

    def __len__(self) -> int:
        return len(self._frames) - self._start

    def append(self, event: Event) -> None:
        if event.seq != self.last_seq + 1 and len(self) > 0:
            raise ValueError(f"seq {event.seq} after {self.last_seq} breaks contiguity")
        if len(self) == 0:
            self.first_seq = event.seq
        self._frames.append(event.frame)
        self._ts.append(event.ts_ms)
        self.last_seq = event.seq
        self.last_ts_ms = event.ts_ms

    def drop_oldest(self) -> int:
        """Drop the oldest event; return its cost in bytes."""
        frame = self._frames[self._start]
        self.dropped_ts_ms = self._ts[self._start]
        self._start += 1
        self.first_seq += 1
        if self._start > 1024 and self._start * 2 > len(self._frames):
            del self._frames[: self._start]
            del self._ts[: self._start]
            self._start = 0
        return frame_cost(frame, self.channel)

    def prepend(self, events: list[Event]) -> None:
        """Put older events, contiguous with the oldest held, in front (cache fill)."""
        if not events:
            return
        if events[-1].seq != self.first_seq - 1:
            raise ValueError("prepended events must end right before the oldest held")
        self._frames[: self._start] = [e.frame for e in events]
        self._ts = array("q", [e.ts_ms for e in events]) + self._ts[self._start :]
        self._start = 0
        self.first_seq = events[0].seq

    def oldest_ts(self) -> int | None:
        return self._ts[self._start] if len(self) else None

    def select(
        self,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        """Matching events, oldest first (see EventLog.read_channel)."""
        lo = self._start
        if since_seq is not None:
            lo = max(lo, self._start + since_seq + 1 - self.first_seq)
        hi = len(self._frames)
        if until_seq is not None:
            hi = min(hi, self._start + until_seq + 1 - self.first_seq)
        if since_ts_ms is not None and lo < hi:
            lo = bisect.bisect_left(self._ts, since_ts_ms, lo, hi)
        if lo >= hi:
            return []
        if newest:
            lo = max(lo, hi - limit)
        else:
            hi = min(hi, lo + limit)
        seq0 = self.first_seq - self._start
        # tuple.__new__ over zipped columns: the fastest way to build many Events
        # (about twice as fast as calling Event(...) per item).
        columns = zip(
            repeat(self.channel), range(seq0 + lo, seq0 + hi), self._ts[lo:hi], self._frames[lo:hi]
        )
        return [_new_tuple(Event, row) for row in columns]

    def covers_from(self, seq: int) -> bool:
        """Whether every event with seq >= ``seq`` that exists is held here."""
        return seq >= self.first_seq


def frame_cost(frame: bytes, channel: str) -> int:
    """What one held event counts against the memory bound (added and dropped alike)."""
    return len(frame) + len(channel) + EVENT_OVERHEAD_BYTES


class RingSet:
    """Rings for many channels, bounded per channel by count and globally by bytes."""

    def __init__(self, per_channel: int, max_bytes: int) -> None:
        self.per_channel = per_channel
        self.max_bytes = max_bytes
        self.rings: dict[str, ChannelRing] = {}
        self.bytes = 0
        self.events = 0
        # Global append order, to evict the oldest event node-wide when over budget.
        # (channel, seq) pairs of str and int: untracked by the garbage collector.
        self._order: deque[tuple[str, int]] = deque()

    def ring(self, channel: str) -> ChannelRing | None:
        return self.rings.get(channel)

    def ensure(self, channel: str, last_seq: int = 0, last_ts_ms: int = 0) -> ChannelRing:
        ring = self.rings.get(channel)
        if ring is None:
            ring = self.rings[channel] = ChannelRing(channel, last_seq, last_ts_ms)
        return ring

    def add(self, event: Event) -> None:
        ring = self.ensure(event.channel, event.seq - 1)
        ring.append(event)
        self.bytes += frame_cost(event.frame, event.channel)
        self.events += 1
        self._order.append((event.channel, event.seq))
        if len(ring) > self.per_channel:
            self._drop(ring)
        while self.bytes > self.max_bytes and self._order:
            self._evict_globally_oldest()
        if len(self._order) > 2 * self.events + 1024:
            self._compact_order()

    def _compact_order(self) -> None:
        """Forget order entries of events dropped by other bounds (amortised O(1))."""
        rings = self.rings
        self._order = deque(
            (channel, seq)
            for channel, seq in self._order
            if len(ring := rings[channel]) and ring.first_seq <= seq
        )

    def add_older(self, channel: str, events: list[Event]) -> int:
        """Cache events read from disk that end right before ``channel``'s oldest held.

        Returns how many were kept: they are the oldest of the node, so they are the
        first to go under the per-channel and global bounds.
        """
        ring = self.rings.get(channel)
        if ring is None or not events or events[-1].seq != ring.first_seq - 1:
            return 0
        room = self.per_channel - len(ring)
        events = events[-room:] if room > 0 else []
        ring.prepend(events)
        self.bytes += sum(frame_cost(e.frame, channel) for e in events)
        self.events += len(events)
        self._order.extendleft((channel, e.seq) for e in reversed(events))
        while self.bytes > self.max_bytes and self._order:
            self._evict_globally_oldest()
        return len(events)

    def _drop(self, ring: ChannelRing) -> None:
        self.bytes -= ring.drop_oldest()
        self.events -= 1

    def _evict_globally_oldest(self) -> None:
        channel, seq = self._order.popleft()
        ring = self.rings[channel]
        # Skip entries whose event is already gone (dropped by the per-channel bound).
        if len(ring) and ring.first_seq == seq:
            self._drop(ring)

    def drop_older_than(self, cutoff_ts_ms: int) -> int:
        """Drop every event with ts < cutoff (age retention); return how many."""
        dropped = 0
        for ring in self.rings.values():
            while (oldest := ring.oldest_ts()) is not None and oldest < cutoff_ts_ms:
                self._drop(ring)
                dropped += 1
        # Keep the order queue from holding entries of long-gone events.
        while self._order:
            channel, seq = self._order[0]
            ring = self.rings[channel]
            if len(ring) and ring.first_seq <= seq:
                break
            self._order.popleft()
        return dropped

    def drop_through(self, channel: str, seq: int) -> None:
        """Drop a channel's events with seq <= ``seq`` (mirrors disk retention)."""
        ring = self.rings.get(channel)
        while ring is not None and len(ring) and ring.first_seq <= seq:
            self._drop(ring)
        if ring is not None and not len(ring):
            ring.first_seq = max(ring.first_seq, seq + 1)
