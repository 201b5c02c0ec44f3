"""The memory backend: the whole log in per-channel rings. Fast, and lost on restart.

Seqs restart at 1 with each process, so each start has a new epoch (set by
:class:`EventLog`), and clients start their channels over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from athena_cdc.log.base import (
    EMPTY_BOUNDS,
    ChannelBounds,
    Event,
    EventLog,
    LogStats,
    NewEvent,
    SourcePosition,
)
from athena_cdc.log.ring import RingSet


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
        self._rings = RingSet(retention_events, memory_limit)
        self._retention_age = retention_age
        self._positions: dict[str, str] = {}
        self._pruner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._retention_age is not None:
            self._pruner = asyncio.create_task(self._prune_forever(), name="memory-retention")

    async def close(self) -> None:
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

    def append_now(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        """Assign seq/ts and store, synchronously (nothing here can fail half-way)."""
        now = now_ms()
        events: list[Event] = []
        for item in batch:
            ring = self._rings.ensure(item.channel)
            # ts never decreases within a channel, even if the wall clock steps back.
            event = Event.build(
                item.channel, ring.last_seq + 1, max(now, ring.last_ts_ms), item.payload
            )
            self._rings.add(event)
            events.append(event)
        if position is not None:
            self._positions[position.source] = position.position
        return events

    async def get_position(self, source: str) -> str | None:
        return self._positions.get(source)

    def bounds(self, channel: str) -> ChannelBounds:
        ring = self._rings.ring(channel)
        if ring is None:
            return EMPTY_BOUNDS
        return ChannelBounds(ring.first_seq, ring.last_seq, ring.dropped_ts_ms)

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
        return LogStats(len(self._rings.rings), self._rings.events, self._rings.bytes)

    async def prune(self) -> int:
        if self._retention_age is None:
            return 0
        return self._rings.drop_older_than(now_ms() - int(self._retention_age * 1000))

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.prune()
