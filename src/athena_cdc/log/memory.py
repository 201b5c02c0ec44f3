"""The memory backend: the whole log in per-channel rings. Fast, and lost on restart.

Seqs restart at 1 with each process, so each start has a new epoch (set by
:class:`EventLog`), and clients start their channels over.

Everything it holds counts against ``memory_limit``: the rings (events and a fixed
cost per channel that holds events) and, for each channel whose events have all been
dropped, a small counter of its last seq and ts. That counter cannot be forgotten --
the channel's seqs would start again at 1 under the same epoch (invariant 1) -- so
counters may take at most half the limit; beyond that, appends that name a channel
never seen before are refused (StorageUnavailable, HTTP 503), while known channels
keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from athena_cdc.log.allocator import MemoryReleaser
from athena_cdc.log.base import (
    EMPTY_BOUNDS,
    ChannelBounds,
    Event,
    EventLog,
    LogStats,
    NewEvent,
    SourcePosition,
    StorageUnavailable,
)
from athena_cdc.log.ring import ChannelRing, RingSet

# What a remembered channel counts against the limit besides its name's length: the
# name's str header, the dict slot (with the dict's spare room) and the packed int.
COUNTER_OVERHEAD_BYTES = 192
# Counters pack (last_seq, last_ts_ms) in one int: ts_ms < 2**43 until the year 2248.
_TS_BITS = 43
_TS_MASK = (1 << _TS_BITS) - 1


def counter_cost(channel: str) -> int:
    return len(channel) + COUNTER_OVERHEAD_BYTES


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryLog(EventLog):
    name = "memory"

    def __init__(
        self,
        *,
        retention_events: int = 100_000,
        retention_age: float | None = None,
        memory_limit: int = 512 * 1024**2,
    ) -> None:
        super().__init__()
        self._rings = RingSet(retention_events, memory_limit, on_empty=self._remember)
        # Channels with no event held: channel -> last_seq << _TS_BITS | last_ts_ms.
        self._counters: dict[str, int] = {}
        self._retention_age = retention_age
        self._positions: dict[str, str] = {}
        self._pruner: asyncio.Task[None] | None = None
        self._releaser = MemoryReleaser()

    async def open(self) -> None:
        self._releaser.start()
        if self._retention_age is not None:
            self._pruner = asyncio.create_task(self._prune_forever(), name="memory-retention")

    async def close(self) -> None:
        await self._releaser.stop()
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner

    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        events = self.append_now(batch, position)
        self._notify(events)
        return events

    def start_append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> asyncio.Future[list[Event]]:
        # Done before it is returned: memory is as durable as this store gets.
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        try:
            events = self.append_now(batch, position)
        except StorageUnavailable as exc:
            future.set_exception(exc)
            return future
        self._notify(events)
        future.set_result(events)
        return future

    def append_now(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        """Assign seq/ts and store, synchronously: the whole batch, or (refused) none."""
        # What the request's parsing left behind is worth giving back, refused or not.
        self._releaser.note_batch(batch)
        self._check_room_for_new_channels(batch)
        now = now_ms()
        events: list[Event] = []
        rings = self._rings
        for item in batch:
            ring = rings.ring(item.channel)
            if ring is not None:
                last_seq, last_ts = ring.last_seq, ring.last_ts_ms
            else:
                last_seq, last_ts = self._recall(item.channel)
            # ts never decreases within a channel, even if the wall clock steps back.
            event = Event.build(item.channel, last_seq + 1, max(now, last_ts), item.payload)
            rings.add(event)
            events.append(event)
        if position is not None:
            self._positions[position.source] = position.position
        return events

    def _check_room_for_new_channels(self, batch: Sequence[NewEvent]) -> None:
        """Refuse the whole batch if remembering its new channels would break the bound."""
        rings, counters = self._rings, self._counters
        held = rings.rings
        for item in batch:
            if item.channel not in held and item.channel not in counters:
                break
        else:
            return  # every channel is known: the common case, with no set built
        new = {
            item.channel
            for item in batch
            if item.channel not in held and item.channel not in counters
        }
        if rings.reserved + sum(map(counter_cost, new)) > rings.max_bytes // 2:
            raise StorageUnavailable(
                f"the memory store remembers the last seq of every channel it has seen, "
                f"and {len(counters)} channels fill half of --memory-limit; "
                "raise --memory-limit or use the sqlite store"
            )

    def _remember(self, ring: ChannelRing) -> None:
        """A ring lost its last event: keep what its next event needs (seq, ts)."""
        self._counters[ring.channel] = ring.last_seq << _TS_BITS | (ring.last_ts_ms & _TS_MASK)
        self._rings.reserved += counter_cost(ring.channel)

    def _recall(self, channel: str) -> tuple[int, int]:
        """(last_seq, last_ts_ms) of a channel without a ring; it gets one next."""
        packed = self._counters.pop(channel, None)
        if packed is None:
            return 0, 0
        self._rings.reserved -= counter_cost(channel)
        return packed >> _TS_BITS, packed & _TS_MASK

    async def get_position(self, source: str) -> str | None:
        return self._positions.get(source)

    def bounds(self, channel: str) -> ChannelBounds:
        ring = self._rings.ring(channel)
        if ring is not None:
            return ChannelBounds(ring.first_seq, ring.last_seq, ring.dropped_ts_ms)
        packed = self._counters.get(channel)
        if packed is None:
            return EMPTY_BOUNDS
        # Every event was dropped, so the newest dropped one is the last appended.
        return ChannelBounds((packed >> _TS_BITS) + 1, packed >> _TS_BITS, packed & _TS_MASK)

    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        ring = self._rings.ring(channel)
        if ring is None:
            return []
        return ring.select(since_seq, since_ts_ms, limit, newest, until_seq)

    def stats(self) -> LogStats:
        rings = self._rings
        return LogStats(
            len(rings.rings) + len(self._counters), rings.events, rings.bytes + rings.reserved
        )

    async def prune(self) -> int:
        if self._retention_age is None:
            return 0
        dropped = self._rings.drop_older_than(now_ms() - int(self._retention_age * 1000))
        self._rings.fit()  # the counters of emptied channels count too
        return dropped

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.prune()
