"""Travel selection shared by every backend.

A travel names channels and an optional cursor. With a cursor (``since_seq`` and/or
``since_ts_ms``) the *oldest* ``limit`` matching events are chosen, so a client pages
forward; without one, the *newest* ``limit`` ("replay the last 100"). Several channels
are merged by ``(ts_ms, channel, seq)`` and ``limit`` counts them together. Events
are always returned oldest first.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from athena_cdc.log.base import ChannelBounds, Event, Gap, TravelQuery, TravelResult

if TYPE_CHECKING:
    from athena_cdc.log.base import EventLog


def _merge_key(event: Event) -> tuple[int, str, int]:
    return (event.ts_ms, event.channel, event.seq)


async def run_travel(log: EventLog, query: TravelQuery) -> TravelResult:
    newest = not query.has_cursor
    per_channel: list[list[Event]] = []
    gaps: list[Gap] = []
    for channel in dict.fromkeys(query.channels):  # unique, in order
        bounds = log.bounds(channel)
        gap = retention_gap(channel, bounds, query)
        if gap is not None:
            gaps.append(gap)
        # One more than the limit tells whether more matched.
        events = await log.read_channel(
            channel,
            query.since_seq,
            query.since_ts_ms,
            query.limit + 1,
            newest,
            query.upper(channel),
        )
        per_channel.append(events)
    if len(per_channel) == 1:
        merged = per_channel[0]
    else:
        merged = list(heapq.merge(*per_channel, key=_merge_key))
    has_more = len(merged) > query.limit
    if has_more:
        merged = merged[-query.limit :] if newest else merged[: query.limit]
    return TravelResult(merged, has_more, gaps)


def retention_gap(channel: str, bounds: ChannelBounds, query: TravelQuery) -> Gap | None:
    """The part of the requested range that retention has already dropped, if any.

    With ``since_seq`` the request starts at ``since_seq + 1``; a time cursor alone
    cannot tell which dropped events matched, so it reports from seq 1 when the newest
    dropped event is not older than ``since_ts_ms``; without a cursor the request is
    the newest ``limit`` seqs.
    """
    dropped_through = bounds.first_seq - 1
    if dropped_through < 1:
        return None
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
    if start > dropped_through:
        return None
    return Gap(channel, start, dropped_through)
