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
from athena_cdc.slicing import TimeSlice

if TYPE_CHECKING:
    from athena_cdc.log.base import EventLog

PAGE = 5_000  # events handed out at a time (about 1 MiB of frames)
MIN_PAGE = 256  # events read per channel at a time when several channels are merged
# One channel is read as a small first page (so the reply starts at once), then the
# rest in reads of at most MAX_READ events, each of which builds its events without
# giving way to the loop: about a millisecond of work.
FIRST_PAGE = 1_000
MAX_READ = 2_000
MERGE_CHECK_EVERY = 64  # merged events between two looks at the time slice


@dataclass(slots=True)
class _Stream:
    """One channel's matching events, one page at a time, in merge order."""

    log: EventLog
    query: TravelQuery
    channel: str
    page: int
    newest: bool
    rank: int = 0  # position of ``channel`` in name order: the merge key's middle part
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


def _key(event: Event, rank: int, newest: bool) -> tuple[int, int, int]:
    """Merge key ``(ts_ms, channel, seq)`` as integers (the channel by its rank in name
    order), so the heap compares plain tuples; negated when walking back from the newest."""
    if newest:
        return (-event.ts_ms, -rank, -event.seq)
    return (event.ts_ms, rank, event.seq)


async def _merged(
    streams: list[_Stream], newest: bool, time_slice: TimeSlice
) -> AsyncGenerator[Event, None]:
    """The streams' events in merge order (descending when ``newest``)."""
    by_rank: dict[int, _Stream] = {}
    heap: list[tuple[int, int, int]] = []
    for number, stream in enumerate(streams, 1):
        by_rank[stream.rank] = stream
        if (event := stream.current()) is not None:
            heapq.heappush(heap, _key(event, stream.rank, newest))
        if number % MERGE_CHECK_EVERY == 0:
            await time_slice.pause()
    merged = 0
    while heap:
        key = heapq.heappop(heap)
        stream = by_rank[-key[1] if newest else key[1]]
        event = stream.current()
        assert event is not None
        yield event
        following = await stream.advance()
        if following is not None:
            heapq.heappush(heap, _key(following, stream.rank, newest))
        merged += 1
        if merged % MERGE_CHECK_EVERY == 0:
            await time_slice.pause()


async def _pages(stream: _Stream, time_slice: TimeSlice) -> AsyncGenerator[list[Event], None]:
    """A single stream's pages, as read."""
    while stream.events:
        yield stream.events
        if stream.exhausted:
            return
        await time_slice.pause()
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
        self.slice = TimeSlice()  # shared with whoever writes the pages out
        self.count = 0
        self.has_more = False
        self.gaps: list[Gap] = []

    async def pages(self) -> AsyncGenerator[list[Event], None]:
        if self.query.until_seq is None:  # else the caller refreshed them to set it
            await self.log.refresh_bounds(self.query.channels)
        streams, cut_before = await self._open_streams()
        if not streams:
            return
        if streams[0].newest:
            newest_first = await self._newest_of_several(streams)
            await self._release(streams)
            # Handed out from the end, so each page's events are freed once it is
            # written (freeing 50,000 at once would be a stall of its own).
            while newest_first:
                page = newest_first[-PAGE:]
                del newest_first[-PAGE:]
                page.reverse()
                yield page
            return
        # One channel needs no merge: its pages are handed out as read.
        if len(streams) == 1:
            chunks = _pages(streams[0], self.slice)
        else:
            chunks = _batches(_merged(streams, False, self.slice))
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
        await self._release(streams)
        self.has_more = self.has_more or cut_before

    async def _release(self, streams: list[_Stream]) -> None:
        """Drop the streams' unread pages a few at a time: a merge over 10,000 channels
        holds a page of each, and freeing them all at once would stall the loop."""
        for number, stream in enumerate(streams, 1):
            stream.events = []
            if number % 64 == 0:
                await self.slice.pause()

    async def _open_streams(self) -> tuple[list[_Stream], bool]:
        """A stream per channel, first page read and gaps noted; and, for the tail of
        one channel read as a cursor, whether events before the cut matched too."""
        query = self.query
        channels = list(dict.fromkeys(query.channels))  # unique, in order
        ranks = {channel: rank for rank, channel in enumerate(sorted(channels))}
        want = query.limit + 1  # one more than the limit tells whether more matched
        cut_before = False
        if len(channels) == 1:
            read = query
            if not query.has_cursor:
                read, cut_before = self._tail_as_cursor(channels[0])
            head = min(want, FIRST_PAGE)
            rest = min(max(1, want - head), MAX_READ)
            streams = [_Stream(self.log, read, channels[0], rest, False, first_page=head)]
            reaches_start = True
        else:
            page = min(max(MIN_PAGE, want // max(1, len(channels)) + 1), MAX_READ)
            newest = not query.has_cursor
            streams = []
            for number, channel in enumerate(channels, 1):
                streams.append(_Stream(self.log, query, channel, page, newest, ranks[channel]))
                if number % 64 == 0:
                    await self.slice.pause()
            reaches_start = query.since_seq is not None or page > query.limit
        for stream in streams:
            await stream.fetch()
            await self.slice.pause()
            first_read = min((e.seq for e in stream.events), default=None)
            gap = retention_gap(
                stream.channel, self.log.bounds(stream.channel), query, first_read, reaches_start
            )
            if gap is not None:
                self.gaps.append(gap)
        return streams, cut_before

    async def _newest_of_several(self, streams: list[_Stream]) -> list[Event]:
        """The newest ``limit`` over several channels: walk back to the cut (the list
        is newest first)."""
        picked: list[Event] = []
        merged = _merged(streams, True, self.slice)
        async with contextlib.aclosing(merged):
            async for event in merged:
                picked.append(event)
                if len(picked) > self.query.limit:
                    break
        self.has_more = len(picked) > self.query.limit
        del picked[self.query.limit :]
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
