"""A bounded hand-over of chunks from the reader thread to the event loop.

The reader thread blocks in :meth:`Handoff.put` while more than ``max_bytes`` (or
``max_items``) are waiting, which stops it reading the replication stream; TCP flow
control then holds the rest of the WAL back in PostgreSQL. That bound, not the size
of a transaction, is what decides the source's memory. The loop side never blocks:
it is woken with ``call_soon_threadsafe`` only when it is waiting for work.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from athena_cdc.sources.postgres.assembler import Chunk


class Handoff:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_bytes: int = 16 * 1024 * 1024,
        max_items: int = 10_000,
    ) -> None:
        self._loop = loop
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: deque[Chunk] = deque()
        self._bytes = 0
        self._lock = threading.Condition()
        self._wakeup = asyncio.Event()
        self._consumer_waiting = False
        self.peak_bytes = 0  # highest amount of bytes waiting at once (for tests/metrics)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    # -- reader thread ---------------------------------------------------------------

    def put(self, chunk: Chunk, timeout: float) -> bool:
        """Queue ``chunk``; False if there was no room within ``timeout`` seconds.

        A chunk is always accepted into an empty hand-off, so a chunk larger than
        ``max_bytes`` cannot wedge the reader.
        """
        with self._lock:
            if not self._lock.wait_for(self._has_room_for(chunk), timeout):
                return False
            self._items.append(chunk)
            self._bytes += chunk.nbytes
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            wake = self._consumer_waiting
            self._consumer_waiting = False
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        return True

    def _has_room_for(self, chunk: Chunk) -> Callable[[], bool]:
        def has_room() -> bool:
            if not self._items:
                return True
            return (
                self._bytes + chunk.nbytes <= self.max_bytes and len(self._items) < self.max_items
            )

        return has_room

    # -- event loop --------------------------------------------------------------------

    async def get_batch(self, max_events: int, max_bytes: int) -> list[Chunk]:
        """Wait for chunks; return the oldest ones, as many as fit the limits (≥ 1)."""
        while True:
            self._wakeup.clear()
            with self._lock:
                if self._items:
                    return self._take(max_events, max_bytes)
                self._consumer_waiting = True
            await self._wakeup.wait()

    def _take(self, max_events: int, max_bytes: int) -> list[Chunk]:
        batch = [self._items.popleft()]
        events, nbytes = len(batch[0].events), batch[0].nbytes
        while self._items:
            head = self._items[0]
            if events + len(head.events) > max_events or nbytes + head.nbytes > max_bytes:
                break
            batch.append(self._items.popleft())
            events += len(head.events)
            nbytes += head.nbytes
        self._bytes -= nbytes
        self._lock.notify_all()
        return batch
