"""Travel selection shared by every backend.

A travel names channels and an optional cursor. With a cursor (``since_seq`` and/or
``since_ts_ms``) the *oldest* ``limit`` matching events are chosen, so a client pages
forward; without one, the *newest* ``limit`` ("replay the last 100"). Several channels
are merged by ``(ts_ms, channel, seq)`` and ``limit`` counts them together. Events
are always returned oldest first.

Several channels are read page by page and merged lazily, so a travel over many
channels holds about ``limit`` events in memory, not ``limit`` per channel.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from athena_cdc.log.base import ChannelBounds, Event, Gap, TravelQuery, TravelResult

if TYPE_CHECKING:
    from athena_cdc.log.base import EventLog

MIN_PAGE = 256  # events read per channel at a time when several channels are merged


@dataclass(slots=True)
class _Stream:
    """One channel's matching events, one page at a time, in merge order."""

    log: EventLog
    query: TravelQuery
    channel: str
    page: int
    newest: bool
    events: list[Event] = field(default_factory=list)
    index: int = 0
    exhausted: bool = False

    async def fetch(self, after: Event | None = None) -> None:
        """Read the next page (the first when ``after`` is None)."""
        q = self.query
        if self.newest:  # walk back from the newest, each page oldest first
            until = q.upper(self.channel) if after is None else after.seq - 1
            page = await self.log.read_channel(self.channel, None, None, self.page, True, until)
            page.reverse()
        else:
            since = q.since_seq if after is None else after.seq
            page = await self.log.read_channel(
                self.channel, since, q.since_ts_ms, self.page, False, q.upper(self.channel)
            )
        self.events, self.index = page, 0
        self.exhausted = len(page) < self.page

    def current(self) -> Event | None:
        return self.events[self.index] if self.index < len(self.events) else None

    async def advance(self) -> Event | None:
        self.index += 1
        if self.index == len(self.events) and not self.exhausted:
            await self.fetch(after=self.events[-1])
        return self.current()


class _Key:
    """Merge key; reversed when walking back from the newest events."""

    __slots__ = ("key", "reverse")

    def __init__(self, event: Event, reverse: bool) -> None:
        self.key = (event.ts_ms, event.channel, event.seq)
        self.reverse = reverse

    def __lt__(self, other: _Key) -> bool:
        return self.key > other.key if self.reverse else self.key < other.key


async def run_travel(log: EventLog, query: TravelQuery) -> TravelResult:
    newest = not query.has_cursor
    channels = list(dict.fromkeys(query.channels))  # unique, in order
    want = query.limit + 1  # one more than the limit tells whether more matched
    page = want if len(channels) <= 1 else max(MIN_PAGE, want // len(channels) + 1)
    streams = [_Stream(log, query, channel, page, newest) for channel in channels]
    gaps: list[Gap] = []
    for stream in streams:
        await stream.fetch()
        first = min((e.seq for e in stream.events), default=None)
        gap = retention_gap(stream.channel, log.bounds(stream.channel), query, first, page)
        if gap is not None:
            gaps.append(gap)

    if len(streams) == 1:
        picked = streams[0].events
    else:
        picked = await _merge(streams, want, newest)
    has_more = len(picked) > query.limit
    picked = picked[: query.limit]
    if newest:
        picked.reverse()  # walked newest first; answered oldest first
    return TravelResult(picked, has_more, gaps)


async def _merge(streams: list[_Stream], want: int, newest: bool) -> list[Event]:
    heap: list[tuple[_Key, int]] = []
    for number, stream in enumerate(streams):
        event = stream.current()
        if event is not None:
            heap.append((_Key(event, newest), number))
    heapq.heapify(heap)
    picked: list[Event] = []
    while heap and len(picked) < want:
        _, number = heapq.heappop(heap)
        stream = streams[number]
        event = stream.current()
        assert event is not None
        picked.append(event)
        following = await stream.advance()
        if following is not None:
            heapq.heappush(heap, (_Key(following, newest), number))
    return picked


def retention_gap(
    channel: str,
    bounds: ChannelBounds,
    query: TravelQuery,
    first_read: int | None = None,
    page: int = 0,
) -> Gap | None:
    """The part of the requested range that retention has already dropped, if any.

    With ``since_seq`` the request starts at ``since_seq + 1``; a time cursor alone
    cannot tell which dropped events matched, so it reports from seq 1 when the newest
    dropped event is not older than ``since_ts_ms``; without a cursor the request is
    the newest ``limit`` seqs. ``first_read`` (the first seq the read returned, from
    ``page`` asked for) catches events pruned while the read ran, after ``bounds``.
    """
    dropped_through = bounds.first_seq - 1
    if query.since_ts_ms is not None and (
        bounds.dropped_ts_ms is not None and bounds.dropped_ts_ms < query.since_ts_ms
    ):
        return None  # everything dropped is older than the time cursor
    if query.since_seq is not None:
        start = query.since_seq + 1
    elif query.since_ts_ms is not None:
        start = 1
    else:
        last = query.upper(channel)
        start = max(1, (bounds.last_seq if last is None else last) - query.limit + 1)
    # A read that starts later than the request (and could not have been cut short by
    # the time cursor or a small page) found the seqs before it gone.
    seq_only = query.since_ts_ms is None
    reaches_start = query.since_seq is not None or page > query.limit
    if first_read is not None and seq_only and reaches_start and first_read > start:
        dropped_through = max(dropped_through, first_read - 1)
    if dropped_through < 1 or start > dropped_through:
        return None
    return Gap(channel, start, dropped_through)
