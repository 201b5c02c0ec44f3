"""The Redis store's cache of recently delivered events, so that a travel can still be
answered while Redis is unreachable (``--redis-cache-bytes``).

Each channel's cached events are contiguous in seq and end at the last seq this
process delivered (live delivery is contiguous per channel); the whole cache is bounded
in bytes and drops its oldest events first, across channels. Events never change under
an epoch, so a cached event is always the right answer for its seq; the question is
only whether the cache holds *every* event a travel asks for, which :meth:`read` checks
and answers ``None`` when it does not (the travel then answers ``unavailable``).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence

from athena_cdc.log.base import Event

EVENT_OVERHEAD = 120  # bytes an Event tuple and its deque slot take besides the frame
STALE_ENTRY = 8  # an eviction-order entry left by a forgotten channel


class RecentEvents:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._channels: dict[str, collections.deque[Event]] = {}
        # Each cached event's channel deque, in the order the events were added: the
        # front is the deque holding the oldest cached event. A forgotten channel's
        # deque is emptied and its entries stay until reached (counted in ``bytes``).
        self._order: collections.deque[collections.deque[Event]] = collections.deque()

    def add(self, events: Sequence[Event]) -> None:
        """Cache one channel's newly delivered events (contiguous, following what was
        delivered before; a gap before them restarts the channel's cache)."""
        if self.max_bytes <= 0 or not events:
            return
        channel = events[0].channel
        cached = self._channels.get(channel)
        if cached is None:
            cached = self._channels[channel] = collections.deque()
        elif cached and cached[-1].seq + 1 != events[0].seq:
            self.forget(channel)
            cached = self._channels[channel] = collections.deque()
        for event in events:
            cached.append(event)
            self._order.append(cached)
            self.bytes += len(event.frame) + EVENT_OVERHEAD
        while self.bytes > self.max_bytes and self._order:
            oldest = self._order.popleft()
            if oldest:
                dropped = oldest.popleft()
                self.bytes -= len(dropped.frame) + EVENT_OVERHEAD
            else:
                self.bytes -= STALE_ENTRY

    def forget(self, channel: str) -> None:
        """Drop a channel's events (its delivery jumped: they no longer lead up to it).
        Their entries in the eviction order stay, as a few bytes each, until reached."""
        cached = self._channels.pop(channel, None)
        if cached:
            self.bytes -= sum(len(e.frame) + EVENT_OVERHEAD - STALE_ENTRY for e in cached)
            cached.clear()

    def clear(self) -> None:
        self._channels.clear()
        self._order.clear()
        self.bytes = 0

    def read(
        self,
        channel: str,
        retained_from: int,
        delivered: int,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None,
    ) -> list[Event] | None:
        """What ``EventLog.read_channel`` would answer, from the cache, or None when the
        cache does not hold all of it. ``retained_from`` is the oldest seq the log keeps,
        ``delivered`` the last seq this process delivered: nothing newer is asked for."""
        cached = self._channels.get(channel)
        low = max((since_seq or 0) + 1, retained_from)
        high = delivered if until_seq is None else min(until_seq, delivered)
        if high < low:
            return []
        if not cached or cached[-1].seq < high:
            return None
        first = cached[0].seq
        if newest:
            # The newest `limit` of [low, high], then the ts filter (as the store does).
            start = max(low, high - limit + 1)
            if start < first:
                return None
            chosen = list(itertools.islice(cached, start - first, high - first + 1))
            if since_ts_ms is not None:
                chosen = [e for e in chosen if e.ts_ms >= since_ts_ms]
            return chosen
        if low < first:
            # Still whole if an event before `low`'s missing part is too old for the
            # ts cursor: ts never decreases, so nothing before it could match.
            if since_ts_ms is None or cached[0].ts_ms >= since_ts_ms:
                return None
            low = first
        result: list[Event] = []
        # islice, not cached[i]: indexing the middle of a deque walks it each time.
        for event in itertools.islice(cached, low - first, high - first + 1):
            if since_ts_ms is not None and event.ts_ms < since_ts_ms:
                continue
            result.append(event)
            if len(result) == limit:
                break
        return result
