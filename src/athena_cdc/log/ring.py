"""Per-channel rings of recent events, with a global memory bound.

Used as the whole log by the memory backend and as the cache of recent events by
the sqlite backend. Each channel's events are contiguous in seq, so a seq lookup is
an index computation and a time lookup is a binary search (ts never decreases).

A ring keeps only the events' frames (``bytes``) and their times (an ``array``), not
:class:`Event` objects: neither is tracked by the garbage collector, so millions of
retained events cost a full collection nothing (with an object per event, a full
collection took 0.7 s at 2 M events). Events are rebuilt for the few that a travel
returns.

What the bound counts (``RingSet.bytes``): every held event's :func:`frame_cost`, and
:data:`CHANNEL_OVERHEAD_BYTES` plus the name for every channel that has a ring. A
ring exists only while it holds an event: a channel whose events are all dropped
costs nothing here (the backend decides what, if anything, it remembers of it).
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Callable
from itertools import repeat

from athena_cdc.log.base import Event

_new_tuple = tuple.__new__

# What one held event costs besides its frame's length, measured on CPython 3.11
# (64-bit): the bytes object's header and allocator rounding (~48), its list slot and
# its ts slot (8 + 8), the same again for a dropped slot not yet compacted away (at
# most one per held event, see ChannelRing.drop_oldest), and its entry in the global
# eviction order (8, and at most one stale entry more).
EVENT_OVERHEAD_BYTES = 96

# What a ring costs besides its events and its channel name's length: the ring object,
# its empty list and array, the name's str header, the dict slot in RingSet.rings
# (with the dict's spare room), and up to COMPACT_AT dropped slots.
CHANNEL_OVERHEAD_BYTES = 640

# Dropped slots are compacted away once there are this many and they are at least
# half of the list: amortised O(1) per drop, and never more dead slots than live ones
# (beyond this small floor).
COMPACT_AT = 16

_DROPPED = b""  # what a dropped event's slot holds until compaction (frees the frame)


def frame_cost(frame: bytes, channel: str) -> int:
    """What one held event counts against the memory bound (added and dropped alike)."""
    return len(frame) + EVENT_OVERHEAD_BYTES


def channel_cost(channel: str) -> int:
    """What a channel's ring counts against the memory bound while it exists."""
    return len(channel) + CHANNEL_OVERHEAD_BYTES


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
        "stale",
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
        # Entries of this ring in RingSet's eviction order whose event was dropped by
        # another bound; they are always this ring's earliest entries there.
        self.stale = 0

    def __len__(self) -> int:
        return len(self._frames) - self._start

    def append(self, event: Event) -> None:
        frames = self._frames
        if len(frames) == self._start:  # empty (len(self), without the method call)
            self.first_seq = event.seq
        elif event.seq != self.last_seq + 1:
            raise ValueError(f"seq {event.seq} after {self.last_seq} breaks contiguity")
        frames.append(event.frame)
        self._ts.append(event.ts_ms)
        self.last_seq = event.seq
        self.last_ts_ms = event.ts_ms

    def drop_oldest(self) -> int:
        """Drop the oldest event; return its cost in bytes.

        The frame is released at once (its slot is emptied); the slots themselves go
        when dropped ones are at least half of the list.
        """
        start = self._start
        frame = self._frames[start]
        self._frames[start] = _DROPPED
        self.dropped_ts_ms = self._ts[start]
        self._start = start = start + 1
        self.first_seq += 1
        if start >= COMPACT_AT and start * 2 >= len(self._frames):
            del self._frames[:start]
            del self._ts[:start]
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


class RingSet:
    """Rings for many channels, bounded per channel by count and globally by bytes.

    ``on_empty(ring)`` is called when a ring's last event is dropped, right before the
    ring is forgotten: the memory backend keeps the channel's last seq from it.
    ``reserved`` is bytes counted against the bound that the set cannot evict (the
    backend's own per-channel state); events are evicted to make room for them.
    """

    def __init__(
        self,
        per_channel: int,
        max_bytes: int,
        on_empty: Callable[[ChannelRing], None] | None = None,
    ) -> None:
        self.per_channel = per_channel
        self.max_bytes = max_bytes
        self.rings: dict[str, ChannelRing] = {}
        self.bytes = 0  # events and rings, see the module docstring
        self.reserved = 0
        self.events = 0
        self._on_empty = on_empty
        # Global append order, to evict the oldest event node-wide when over budget:
        # one entry (the ring) per held event, plus stale ones (see ChannelRing.stale).
        self._order: deque[ChannelRing] = deque()

    def ring(self, channel: str) -> ChannelRing | None:
        return self.rings.get(channel)

    def _ensure(self, channel: str, last_seq: int, last_ts_ms: int = 0) -> ChannelRing:
        ring = self.rings.get(channel)
        if ring is None:
            ring = self.rings[channel] = ChannelRing(channel, last_seq, last_ts_ms)
            self.bytes += channel_cost(channel)
        return ring

    def add(self, event: Event) -> None:
        # Once per event appended or cached: the common case (a known channel, under
        # both bounds) is kept to a few attribute reads.
        ring = self.rings.get(event.channel)
        if ring is None:
            ring = self._ensure(event.channel, event.seq - 1)
        ring.append(event)
        self.bytes += frame_cost(event.frame, event.channel)
        self.events += 1
        order = self._order
        order.append(ring)
        if len(ring) > self.per_channel:
            self._drop(ring)
        if self.bytes + self.reserved > self.max_bytes:
            self.fit()
        if len(order) > 2 * self.events + 1024:
            self._compact_order()

    def fit(self) -> None:
        """Evict the node's oldest events until the bound holds (or none is left)."""
        order = self._order
        while self.bytes + self.reserved > self.max_bytes and order:
            ring = order.popleft()
            if ring.stale:  # that event is already gone
                ring.stale -= 1
            else:
                self._drop(ring, stale=False)

    def _compact_order(self) -> None:
        """Forget order entries of events dropped by other bounds (amortised O(1))."""
        kept: deque[ChannelRing] = deque()
        for ring in self._order:
            if ring.stale:
                ring.stale -= 1
            else:
                kept.append(ring)
        self._order = kept

    def add_older(self, channel: str, events: list[Event], last_seq: int) -> int:
        """Cache events read from disk that end right before ``channel``'s oldest held
        (or, when nothing of it is held, at its ``last_seq``).

        Returns how many were kept: they are the oldest of the node, so they are the
        first to go under the per-channel and global bounds.
        """
        if not events:
            return 0
        ring = self.rings.get(channel)
        if ring is None and events[-1].seq == last_seq:
            ring = self._ensure(channel, last_seq, events[-1].ts_ms)
        if ring is None or events[-1].seq != ring.first_seq - 1:
            return 0
        room = self.per_channel - len(ring)
        events = events[-room:] if room > 0 else []
        ring.prepend(events)
        self.bytes += sum(frame_cost(e.frame, channel) for e in events)
        self.events += len(events)
        self._order.extendleft(repeat(ring, len(events)))
        self.fit()
        self._forget_if_empty(ring)
        return len(events)

    def _drop(self, ring: ChannelRing, stale: bool = True) -> None:
        """Drop ``ring``'s oldest event; ``stale``: its order entry stays behind."""
        self.bytes -= ring.drop_oldest()
        self.events -= 1
        if stale:
            ring.stale += 1
        self._forget_if_empty(ring)

    def _forget_if_empty(self, ring: ChannelRing) -> None:
        if len(ring) or self.rings.get(ring.channel) is not ring:
            return
        if self._on_empty is not None:
            self._on_empty(ring)
        del self.rings[ring.channel]
        self.bytes -= channel_cost(ring.channel)

    def drop_older_than(self, cutoff_ts_ms: int) -> int:
        """Drop every event with ts < cutoff (age retention); return how many."""
        dropped = 0
        for ring in list(self.rings.values()):
            while (oldest := ring.oldest_ts()) is not None and oldest < cutoff_ts_ms:
                self._drop(ring)
                dropped += 1
        # Keep the order queue from holding entries of long-gone events.
        order = self._order
        while order and order[0].stale:
            order.popleft().stale -= 1
        return dropped

    def drop_through(self, channel: str, seq: int) -> None:
        """Drop a channel's events with seq <= ``seq`` (mirrors disk retention)."""
        ring = self.rings.get(channel)
        while ring is not None and len(ring) and ring.first_seq <= seq:
            self._drop(ring)
