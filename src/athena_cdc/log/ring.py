"""Per-channel rings of recent events, with a global memory bound.

Used as the whole log by the memory backend and as the cache of recent events by
the sqlite backend. Each channel's events are contiguous in seq, so a seq lookup is
an index computation and a time lookup is a binary search (ts never decreases).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator

from athena_cdc.log.base import Event

# Per-event bookkeeping cost (object headers, list slot, ...) counted in the memory bound.
EVENT_OVERHEAD_BYTES = 120


class ChannelRing:
    """The retained events of one channel, oldest first."""

    __slots__ = ("_events", "_start", "dropped_ts_ms", "first_seq", "last_seq", "last_ts_ms")

    def __init__(self, last_seq: int = 0, last_ts_ms: int = 0) -> None:
        # A list with a moving start index: append and drop-oldest are O(1)
        # amortised, and a seq maps to an index without walking a deque.
        self._events: list[Event] = []
        self._start = 0
        self.first_seq = last_seq + 1  # seq of the oldest event held
        self.last_seq = last_seq
        self.last_ts_ms = last_ts_ms
        self.dropped_ts_ms: int | None = None

    def __len__(self) -> int:
        return len(self._events) - self._start

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events[self._start :])

    def append(self, event: Event) -> None:
        if event.seq != self.last_seq + 1 and len(self) > 0:
            raise ValueError(f"seq {event.seq} after {self.last_seq} breaks contiguity")
        if len(self) == 0:
            self.first_seq = event.seq
        self._events.append(event)
        self.last_seq = event.seq
        self.last_ts_ms = event.ts_ms

    def drop_oldest(self) -> Event:
        event = self._events[self._start]
        self._start += 1
        self.first_seq += 1
        self.dropped_ts_ms = event.ts_ms
        if self._start > 1024 and self._start * 2 > len(self._events):
            del self._events[: self._start]
            self._start = 0
        return event

    def oldest(self) -> Event | None:
        return self._events[self._start] if len(self) else None

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
        if since_ts_ms is not None:
            lo = bisect.bisect_left(self._events, since_ts_ms, lo=lo, key=_ts)
        hi = len(self._events)
        if until_seq is not None:
            hi = min(hi, self._start + until_seq + 1 - self.first_seq)
        if lo >= hi:
            return []
        if newest:
            return self._events[max(lo, hi - limit) : hi]
        return self._events[lo : min(hi, lo + limit)]

    def covers_from(self, seq: int) -> bool:
        """Whether every event with seq >= ``seq`` that exists is held here."""
        return seq >= self.first_seq

    def first_with_ts_at_least(self, ts_ms: int) -> int | None:
        """Seq of the first held event with ts >= ts_ms, if any."""
        index = bisect.bisect_left(self._events, ts_ms, lo=self._start, key=_ts)
        return self._events[index].seq if index < len(self._events) else None


def _ts(event: Event) -> int:
    return event.ts_ms


def event_cost(event: Event) -> int:
    return len(event.frame) + len(event.channel) + EVENT_OVERHEAD_BYTES


class RingSet:
    """Rings for many channels, bounded per channel by count and globally by bytes."""

    def __init__(self, per_channel: int, max_bytes: int) -> None:
        self.per_channel = per_channel
        self.max_bytes = max_bytes
        self.rings: dict[str, ChannelRing] = {}
        self.bytes = 0
        self.events = 0
        # Global append order, to evict the oldest event node-wide when over budget.
        self._order: deque[tuple[ChannelRing, int]] = deque()

    def ring(self, channel: str) -> ChannelRing | None:
        return self.rings.get(channel)

    def ensure(self, channel: str, last_seq: int = 0, last_ts_ms: int = 0) -> ChannelRing:
        ring = self.rings.get(channel)
        if ring is None:
            ring = self.rings[channel] = ChannelRing(last_seq, last_ts_ms)
        return ring

    def add(self, event: Event) -> None:
        ring = self.ensure(event.channel, event.seq - 1)
        ring.append(event)
        self.bytes += event_cost(event)
        self.events += 1
        self._order.append((ring, event.seq))
        if len(ring) > self.per_channel:
            self._drop(ring)
        while self.bytes > self.max_bytes and self._order:
            self._evict_globally_oldest()

    def _drop(self, ring: ChannelRing) -> None:
        event = ring.drop_oldest()
        self.bytes -= event_cost(event)
        self.events -= 1

    def _evict_globally_oldest(self) -> None:
        ring, seq = self._order.popleft()
        # Skip entries whose event is already gone (dropped by the per-channel bound).
        if len(ring) and ring.first_seq == seq:
            self._drop(ring)

    def drop_older_than(self, cutoff_ts_ms: int) -> int:
        """Drop every event with ts < cutoff (age retention); return how many."""
        dropped = 0
        for ring in self.rings.values():
            while (oldest := ring.oldest()) is not None and oldest.ts_ms < cutoff_ts_ms:
                self._drop(ring)
                dropped += 1
        # Keep the order queue from holding references to long-gone events.
        while self._order and (
            not len(self._order[0][0]) or self._order[0][0].first_seq > self._order[0][1]
        ):
            self._order.popleft()
        return dropped

    def drop_through(self, channel: str, seq: int) -> None:
        """Drop a channel's events with seq <= ``seq`` (mirrors disk retention)."""
        ring = self.rings.get(channel)
        while ring is not None and len(ring) and ring.first_seq <= seq:
            self._drop(ring)
        if ring is not None and not len(ring):
            ring.first_seq = max(ring.first_seq, seq + 1)
