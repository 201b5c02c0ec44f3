"""Channels ranked busiest first, paged, from periodic snapshots of what is in memory.

A snapshot is one pass over the channels the log holds (:mod:`athena_cdc.console.held`)
and the hub's subscribed ones, recording each channel's last seq. Two snapshots give
every channel's events per second (seq difference over time), so the hot path keeps
nothing per event for it. Snapshots are taken only when the API is called, at most one
per :data:`MIN_SNAPSHOT_INTERVAL_S` -- and never more often than keeps their cost
under :data:`MAX_SNAPSHOT_SHARE` of one core -- and shared by every viewer; a page is a
``heapq.nlargest`` over the snapshot, and repeated pages of one snapshot are cached.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from athena_cdc.console.cursor import decode_cursor, encode_cursor
from athena_cdc.console.held import held_channels
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog
from athena_cdc.protocol.messages import channel_problem

MIN_SNAPSHOT_INTERVAL_S = 2.0
MAX_SNAPSHOT_SHARE = 0.02  # at most 2% of a core on snapshots while the page is open
PAGE_CACHE_ENTRIES = 64

# Sort key of a channel, busiest first: events/s, then last event time, then name.
RankKey = tuple[float, int, str]
_KEY_SHAPE = (float, int, str)


@dataclass(frozen=True, slots=True)
class ChannelRow:
    name: str
    last_seq: int
    last_ts_ms: int | None
    events_per_s: float | None  # None: first snapshot, or the channel is new since

    def key(self) -> RankKey:
        return (self.events_per_s or 0.0, self.last_ts_ms or 0, self.name)


@dataclass(slots=True)
class Snapshot:
    taken_at: float  # monotonic
    taken_at_ms: int
    window_s: float | None  # time since the previous snapshot
    scan_s: float
    channels: dict[str, ChannelRow]
    rows: list[tuple[RankKey, ChannelRow]]
    pages: dict[tuple[str, int, str | None], ChannelPage] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelPage:
    rows: list[ChannelRow]
    next_cursor: str | None
    known: int  # channels in the snapshot
    taken_at_ms: int
    window_s: float | None


class ChannelIndex:
    def __init__(
        self, log: EventLog, hub: Hub, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._hub = hub
        self._clock = clock
        self._snapshot: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        """The current snapshot, taken anew if the last one is old enough."""
        now = self._clock()
        last = self._snapshot
        if last is not None:
            interval = max(MIN_SNAPSHOT_INTERVAL_S, last.scan_s / MAX_SNAPSHOT_SHARE)
            if now - last.taken_at < interval:
                return last
        self._snapshot = self._take(last)
        return self._snapshot

    def _take(self, previous: Snapshot | None) -> Snapshot:
        started = time.perf_counter()
        now = self._clock()
        seqs: dict[str, int] = {}
        times: dict[str, int | None] = {}
        for name, last_seq, last_ts in held_channels(self._log):
            seqs[name] = last_seq
            times[name] = last_ts
        for name in self._hub.subscribed_channels():
            if name not in seqs:  # subscribed, but nothing of it in memory
                seqs[name] = self._log.bounds(name).last_seq
                times[name] = None
        window = None if previous is None else now - previous.taken_at
        before = {} if previous is None else previous.channels
        channels: dict[str, ChannelRow] = {}
        rows: list[tuple[RankKey, ChannelRow]] = []
        for name, seq in seqs.items():
            rate = None
            if window is not None and window > 0:
                old = before.get(name)
                if old is not None:
                    rate = round(max(0, seq - old.last_seq) / window, 2)
            row = channels[name] = ChannelRow(name, seq, times[name], rate)
            rows.append((row.key(), row))
        return Snapshot(
            now,
            time.time_ns() // 1_000_000,
            None if window is None else round(window, 3),
            time.perf_counter() - started,
            channels,
            rows,
        )

    def page(self, q: str, limit: int, cursor: str | None) -> ChannelPage:
        """Channels whose name contains ``q`` (any case), busiest first, after ``cursor``.

        Raises :class:`athena_cdc.console.cursor.BadCursor` for a cursor not from here.
        """
        snap = self.snapshot()
        cache_key = (q, limit, cursor)
        cached = snap.pages.get(cache_key)
        if cached is not None:
            return cached
        after = None if cursor is None else decode_cursor(cursor, _KEY_SHAPE)
        candidates = iter(snap.rows)
        if q:
            folded = q.casefold()
            candidates = (item for item in candidates if folded in item[1].name.casefold())
        if after is not None:
            candidates = (item for item in candidates if item[0] < after)
        top = heapq.nlargest(limit + 1, candidates, key=_first)
        rows = [row for _, row in top[:limit]]
        if q and cursor is None:
            exact = self._exact(q, snap)
            if exact is not None:
                rows = [exact, *rows][:limit]
        page = ChannelPage(
            rows,
            encode_cursor(top[limit - 1][0]) if len(top) > limit else None,
            len(snap.rows),
            snap.taken_at_ms,
            snap.window_s,
        )
        if len(snap.pages) >= PAGE_CACHE_ENTRIES:
            snap.pages.clear()
        snap.pages[cache_key] = page
        return page

    def _exact(self, name: str, snap: Snapshot) -> ChannelRow | None:
        """A channel named exactly ``name`` that the snapshot does not hold (the log
        keeps only recently used channels in memory; any other is found by name)."""
        if name in snap.channels or channel_problem(name) is not None:
            return None
        last_seq = self._log.bounds(name).last_seq
        return ChannelRow(name, last_seq, None, None) if last_seq > 0 else None

    def row(self, name: str) -> ChannelRow | None:
        """What the current snapshot says of one channel (None if it does not hold it)."""
        return self.snapshot().channels.get(name)


def _first(item: tuple[RankKey, ChannelRow]) -> RankKey:
    return item[0]
