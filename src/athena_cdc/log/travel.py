"""Travel selection shared by every backend.

A travel names channels and an optional cursor. With a cursor (``since_seq`` and/or
``since_ts_ms``) the *oldest* ``limit`` matching events are chosen, so a client pages
forward; without one, the *newest* ``limit`` ("replay the last 100"). Several channels
are merged by ``(ts_ms, channel, seq)`` and ``limit`` counts them together. Events
are always returned oldest first.

:class:`TravelReader` answers page by page: channels are read a page at a time and
merged lazily, and pages are handed out as soon as they are complete, so the first
events of a large reply leave before the rest is read and a travel holds about one
page per channel in memory. The newest-``limit`` selection of one channel is turned
into a cursor read (its seqs are contiguous); over several channels it has to find
the cut first, so it is handed out whole.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from athena_cdc.log.base import ChannelBounds, Event, Gap, TravelQuery, TravelResult

if TYPE_CHECKING:
    from athena_cdc.log.base import EventLog

PAGE = 5_000  # events handed out at a time (about 1 MiB of frames)
MIN_PAGE = 256  # events read per channel at a time when several channels are merged
# One channel is read as a small first page (so the reply starts at once), then the
# rest in one read: one disk query, whose result can join the sqlite cache whole.
FIRST_PAGE = 1_000


@dataclass(slots=True)
class _Stream:
    """One channel's matching events, one page at a time, in merge order."""

    log: EventLog
    query: TravelQuery
    channel: str
    page: int
    newest: bool
    first_page: int = 0  # size of the first read, when it differs from ``page``
    events: list[Event] = field(default_factory=list)
    index: int = 0
    exhausted: bool = False

    async def fetch(self, after: Event | None = None) -> None:
        """Read the next page (the first when ``after`` is None)."""
        q = self.query
        size = self.first_page if after is None and self.first_page else self.page
        if self.newest:  # walk back from the newest, each page oldest first
            until = q.upper(self.channel) if after is None else after.seq - 1
            page = await self.log.read_channel(self.channel, None, None, size, True, until)
            page.reverse()
        else:
            since = q.since_seq if after is None else after.seq
            page = await self.log.read_channel(
                self.channel, since, q.since_ts_ms, size, False, q.upper(self.channel)
            )
        self.events, self.index = page, 0
        self.exhausted = len(page) < size

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


async def _merged(streams: list[_Stream], newest: bool) -> AsyncGenerator[Event, None]:
    """The streams' events in merge order (descending when ``newest``)."""
    heap = [
        (_Key(event, newest), number)
        for number, stream in enumerate(streams)
        if (event := stream.current()) is not None
    ]
    heapq.heapify(heap)
    while heap:
        _, number = heapq.heappop(heap)
        stream = streams[number]
        event = stream.current()
        assert event is not None
        yield event
        following = await stream.advance()
        if following is not None:
            heapq.heappush(heap, (_Key(following, newest), number))


async def _pages(stream: _Stream) -> AsyncGenerator[list[Event], None]:
    """A single stream's pages, as read."""
    while stream.events:
        yield stream.events
        if stream.exhausted:
            return
        await stream.fetch(after=stream.events[-1])


async def _batches(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    batch: list[Event] = []
    async with contextlib.aclosing(events):
        async for event in events:
            batch.append(event)
            if len(batch) == PAGE:
                yield batch
                batch = []
    if batch:
        yield batch


class TravelReader:
    """One travel's answer, page by page; ``count``, ``has_more`` and ``gaps`` are
    final once :meth:`pages` is exhausted."""

    def __init__(self, log: EventLog, query: TravelQuery) -> None:
        self.log = log
        self.query = query
        self.count = 0
        self.has_more = False
        self.gaps: list[Gap] = []

    async def pages(self) -> AsyncGenerator[list[Event], None]:
        streams, cut_before = await self._open_streams()
        if not streams:
            return
        if streams[0].newest:
            picked = await self._newest_of_several(streams)
            for start in range(0, len(picked), PAGE):
                yield picked[start : start + PAGE]
            return
        # One channel needs no merge: its pages are handed out as read.
        chunks = _pages(streams[0]) if len(streams) == 1 else _batches(_merged(streams, False))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                room = self.query.limit - self.count
                if len(chunk) > room:
                    self.has_more = True
                    chunk = chunk[:room]
                if chunk:
                    self.count += len(chunk)
                    yield chunk
                if self.has_more:
                    break
        self.has_more = self.has_more or cut_before

    async def _open_streams(self) -> tuple[list[_Stream], bool]:
        """A stream per channel, first page read and gaps noted; and, for the tail of
        one channel read as a cursor, whether events before the cut matched too."""
        query = self.query
        channels = list(dict.fromkeys(query.channels))  # unique, in order
        want = query.limit + 1  # one more than the limit tells whether more matched
        cut_before = False
        if len(channels) == 1:
            read = query
            if not query.has_cursor:
                read, cut_before = self._tail_as_cursor(channels[0])
            head = min(want, FIRST_PAGE)
            streams = [_Stream(self.log, read, channels[0], max(1, want - head), False, head)]
            reaches_start = True
        else:
            page = max(MIN_PAGE, want // max(1, len(channels)) + 1)
            streams = [_Stream(self.log, query, ch, page, not query.has_cursor) for ch in channels]
            reaches_start = query.since_seq is not None or page > query.limit
        for stream in streams:
            await stream.fetch()
            first_read = min((e.seq for e in stream.events), default=None)
            gap = retention_gap(
                stream.channel, self.log.bounds(stream.channel), query, first_read, reaches_start
            )
            if gap is not None:
                self.gaps.append(gap)
        return streams, cut_before

    async def _newest_of_several(self, streams: list[_Stream]) -> list[Event]:
        """The newest ``limit`` over several channels: walk back to the cut, oldest first."""
        picked: list[Event] = []
        merged = _merged(streams, newest=True)
        async with contextlib.aclosing(merged):
            async for event in merged:
                picked.append(event)
                if len(picked) > self.query.limit:
                    break
        self.has_more = len(picked) > self.query.limit
        picked = picked[: self.query.limit]
        picked.reverse()
        self.count = len(picked)
        return picked

    def _tail_as_cursor(self, channel: str) -> tuple[TravelQuery, bool]:
        """The newest ``limit`` of a channel are the seqs after ``last - limit``; and
        whether retained events lie before that cut (they matched but did not fit)."""
        bounds = self.log.bounds(channel)
        last = self.query.upper(channel)
        last = bounds.last_seq if last is None else min(last, bounds.last_seq)
        start = max(last - self.query.limit, bounds.first_seq - 1, 0)
        return replace(self.query, since_seq=start), start > bounds.first_seq - 1


async def run_travel(log: EventLog, query: TravelQuery) -> TravelResult:
    """A travel's whole answer at once."""
    reader = TravelReader(log, query)
    events = [event async for page in reader.pages() for event in page]
    return TravelResult(events, reader.has_more, reader.gaps)


def retention_gap(
    channel: str,
    bounds: ChannelBounds,
    query: TravelQuery,
    first_read: int | None = None,
    reaches_start: bool = False,
) -> Gap | None:
    """The part of the requested range that retention has already dropped, if any.

    With ``since_seq`` the request starts at ``since_seq + 1``; a time cursor alone
    cannot tell which dropped events matched, so it reports from seq 1 when the newest
    dropped event is not older than ``since_ts_ms``; without a cursor the request is
    the newest ``limit`` seqs. ``first_read`` (the first seq the read returned, when
    the read started at the request's start: ``reaches_start``) catches events pruned
    while the read ran, after ``bounds`` was taken.
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
    # A read that started at the request's start but found a later seq first found the
    # seqs before it gone (a time cursor could have skipped them, so it does not count).
    if first_read is not None and query.since_ts_ms is None and reaches_start:
        dropped_through = max(dropped_through, first_read - 1)
    if dropped_through < 1 or start > dropped_through:
        return None
    return Gap(channel, start, dropped_through)
