"""Channels ranked busiest first, paged, from snapshots of what is in memory.

A snapshot is one pass over the channels the log holds (:mod:`athena_cdc.console.held`)
and the hub's subscribed ones, recording each channel's last seq and time; two
snapshots give every channel's events per second (seq difference over time), so the
hot path keeps nothing per event for it. The pass and the ranking (one sort) run in a
worker thread; the event loop only copies containers. Snapshots are taken only when
the API is called, shared by every viewer, at most one per
:data:`MIN_SNAPSHOT_INTERVAL_S` and never more often than keeps their cost under
:data:`MAX_SNAPSHOT_SHARE` of one core; a page is then a binary search in the sorted
snapshot (a search, one filtering pass per snapshot). Snapshots are dropped when
nobody has asked for :data:`RELEASE_AFTER_S`.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from athena_cdc.console.cursor import decode_cursor, encode_cursor
from athena_cdc.console.held import Reader, capture
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog
from athena_cdc.protocol.messages import channel_problem

MIN_SNAPSHOT_INTERVAL_S = 2.0
MAX_SNAPSHOT_SHARE = 0.02  # of one core, on snapshots, while someone looks
RELEASE_AFTER_S = 60.0
SEARCHES_KEPT = 16  # filtered rankings kept per snapshot (one per search text)
MIN_RATE_WINDOW_S = 1.0  # one channel's rate: samples of its seq at least this far apart
WATCHED_CHANNELS = 1024  # channels whose seq samples are kept for that

# Sort key of a channel: events/s, last event time (0: unknown), name. Ascending in
# the snapshot; pages walk it from the end (busiest first).
RankKey = tuple[float, int, str]
_KEY_SHAPE = (float, int, str)


@dataclass(frozen=True, slots=True)
class ChannelRow:
    name: str
    last_seq: int
    last_ts_ms: int | None
    events_per_s: float | None  # None: first snapshot, or the channel is new since


@dataclass(slots=True)
class Snapshot:
    taken_at: float  # monotonic
    taken_at_ms: int
    window_s: float | None  # time since the previous snapshot (None: the first)
    build_s: float
    seqs: dict[str, int]
    fresh: set[str]  # channels the previous snapshot did not have: no rate yet
    active: dict[str, float]  # events/s of the channels that had events since
    ranking: list[RankKey]  # ascending
    unheld: list[str]  # subscribed channels the log holds nothing of
    searches: dict[str, list[RankKey]] = field(default_factory=dict)

    def row(self, key: RankKey) -> ChannelRow:
        rate, ts, name = key
        rated = self.window_s is not None and name not in self.fresh
        return ChannelRow(name, self.seqs[name], ts or None, rate if rated else None)


@dataclass(frozen=True, slots=True)
class ChannelPage:
    rows: list[ChannelRow]
    next_cursor: str | None
    known: int  # channels in the snapshot
    taken_at_ms: int
    window_s: float | None
    snapshot_ms: float  # what the snapshot cost to take (shown, so that it is watched)


class ChannelIndex:
    def __init__(
        self, log: EventLog, hub: Hub, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._hub = hub
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._taking: asyncio.Task[Snapshot] | None = None
        self._release: asyncio.TimerHandle | None = None
        self._watched: dict[str, list[tuple[float, int]]] = {}

    async def snapshot(self) -> Snapshot:
        """The current snapshot, taken anew if the last one is old enough."""
        loop = asyncio.get_running_loop()
        self._touch(loop)
        last = self._snapshot
        if last is not None:
            interval = max(MIN_SNAPSHOT_INTERVAL_S, last.build_s / MAX_SNAPSHOT_SHARE)
            if self._clock() - last.taken_at < interval:
                return last
        if self._taking is None:  # one at a time, shared by every request waiting
            read = capture(self._log)
            subscribed = list(self._hub.subscribed_channels())
            self._taking = loop.create_task(
                asyncio.to_thread(_build, read, subscribed, last, self._clock())
            )
        taking = self._taking
        try:
            snap = await asyncio.shield(taking)
        finally:
            if taking.done():
                self._taking = None
        if snap is not self._snapshot and snap.taken_at > (last.taken_at if last else -1.0):
            self._add_unheld(snap)
            self._snapshot = snap
        return self._snapshot or snap

    def _add_unheld(self, snap: Snapshot) -> None:
        """Subscribed channels of which the log holds nothing: their seq from bounds()
        (on the loop: a backend may look it up). Usually none."""
        for name in snap.unheld:
            snap.seqs[name] = self._log.bounds(name).last_seq

    def _touch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Someone asked: forget everything RELEASE_AFTER_S after the last question."""
        if self._release is not None:
            self._release.cancel()
        self._release = loop.call_later(RELEASE_AFTER_S, self._forget)

    def _forget(self) -> None:
        """Nobody looked for a while: give the snapshots' memory back."""
        self._snapshot = None
        self._watched.clear()
        self._release = None

    async def page(self, q: str, limit: int, cursor: str | None) -> ChannelPage:
        """Channels whose name contains ``q`` (any case), busiest first, after ``cursor``.

        Raises :class:`athena_cdc.console.cursor.BadCursor` for a cursor not from here.
        """
        after = None if cursor is None else decode_cursor(cursor, _KEY_SHAPE)
        snap = await self.snapshot()
        ranking = snap.ranking
        if q:
            found = snap.searches.get(q)
            if found is None:
                found = await asyncio.to_thread(_search, ranking, q)
                if len(snap.searches) >= SEARCHES_KEPT:
                    snap.searches.clear()
                snap.searches[q] = found
            ranking = found
        end = len(ranking) if after is None else bisect.bisect_left(ranking, after)
        start = max(0, end - limit)
        keys = ranking[start:end][::-1]
        rows = [snap.row(key) for key in keys]
        if q and after is None:
            exact = self._exact(q, snap)
            if exact is not None:
                rows = [exact, *rows][:limit]
        return ChannelPage(
            rows,
            encode_cursor(keys[-1]) if start > 0 else None,
            len(snap.ranking),
            snap.taken_at_ms,
            snap.window_s,
            round(snap.build_s * 1000, 1),
        )

    def _exact(self, name: str, snap: Snapshot) -> ChannelRow | None:
        """A channel named exactly ``name`` that the snapshot does not hold (the log
        keeps only recently used channels in memory; any other is found by name)."""
        if name in snap.seqs or channel_problem(name) is not None:
            return None
        last_seq = self._log.bounds(name).last_seq
        return ChannelRow(name, last_seq, None, None) if last_seq > 0 else None

    def rate(self, name: str) -> float | None:
        """One channel's events/s, from its own seq sampled when asked (at most once a
        second): the one-channel view must not make a snapshot of every channel."""
        self._touch(asyncio.get_running_loop())
        now = self._clock()
        seq = self._log.bounds(name).last_seq
        samples = self._watched.pop(name, None)
        if samples is None:
            samples = [(now, seq)]
        elif now - samples[-1][0] >= MIN_RATE_WINDOW_S:
            samples = [samples[-1], (now, seq)]
        self._watched[name] = samples  # most recently asked last
        while len(self._watched) > WATCHED_CHANNELS:
            del self._watched[next(iter(self._watched))]
        if len(samples) < 2:
            return None
        (t0, s0), (t1, s1) = samples
        return round(max(0, s1 - s0) / (t1 - t0), 2)


def _build(
    read: Reader, subscribed: Sequence[str], previous: Snapshot | None, now: float
) -> Snapshot:
    """Worker thread: one pass over the captured channels (rates on the way), one sort."""
    started = time.perf_counter()
    window = None if previous is None else now - previous.taken_at
    if window is not None and window <= 0:
        window = None
    before = previous.seqs if previous is not None and window is not None else None
    seqs: dict[str, int] = {}
    fresh: set[str] = set()
    active: dict[str, float] = {}
    ranking: list[RankKey] = []
    for name, last_seq, last_ts in read():
        seqs[name] = last_seq
        rate = 0.0
        if before is not None:
            old = before.get(name)
            if old is None:
                fresh.add(name)
            elif last_seq != old and window is not None:
                rate = active[name] = round(max(0, last_seq - old) / window, 2)
        ranking.append((rate, last_ts or 0, name))
    unheld = [name for name in subscribed if name not in seqs]
    for name in unheld:
        seqs[name] = 0  # set on the loop (see ChannelIndex._add_unheld)
        ranking.append((0.0, 0, name))
    # Timsort is near linear here: the backends hold channels in about the order of
    # their last use, which is mostly the order of their last event's time.
    ranking.sort()
    return Snapshot(
        now,
        time.time_ns() // 1_000_000,
        None if window is None else round(window, 3),
        time.perf_counter() - started,
        seqs,
        fresh,
        active,
        ranking,
        unheld,
    )


def _search(ranking: list[RankKey], q: str) -> list[RankKey]:
    """Worker thread: the keys whose channel name contains ``q``, in any case."""
    folded = q.casefold()
    return [key for key in ranking if folded in key[2].casefold()]
