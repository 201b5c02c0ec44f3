"""What the event log already holds in memory about its channels, without any I/O.

The console lists channels from this, and from the hub's subscribed ones, rather than
from the store: a scan of a store's channels (a table of millions of rows for sqlite,
keys in Redis) per request would cost what the console must not. Each backend keeps
the channels it used recently in memory -- all of them for the memory store -- which
are the ones worth looking at; any other channel is found by its exact name
(:meth:`EventLog.bounds`).

This reads the backends' own per-channel state, read-only, so nothing is copied or
tracked per event for the console. :func:`capture` runs on the event-loop thread,
where the backends change that state: it only copies the containers (C speed, a few
milliseconds for 100,000 channels); the reader it returns walks the copies and may run
in a worker thread, so the per-channel Python work never stalls the loop. A value it
reads may be a moment newer than the copy (an int attribute read is atomic): fine for
a console.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import _TS_BITS, _TS_MASK, MemoryLog
from athena_cdc.log.sqlite import SqliteLog

# (channel, last_seq, last_ts_ms); last_ts_ms None when the log holds only the seq.
HeldChannel = tuple[str, int, int | None]
Reader = Callable[[], Iterator[HeldChannel]]


def capture(log: EventLog) -> Reader:
    """Copy what ``log`` holds (loop thread); the reader yields each channel once."""
    if isinstance(log, MemoryLog):
        rings = list(log._rings.rings.values())
        counters = list(log._counters.items())

        def read_memory() -> Iterator[HeldChannel]:
            for ring in rings:
                yield ring.channel, ring.last_seq, ring.last_ts_ms
            for name, packed in counters:
                yield name, packed >> _TS_BITS, packed & _TS_MASK

        return read_memory
    if isinstance(log, SqliteLog):
        # _disk has the exact last seq of every channel used lately; the cache of
        # recent events (a subset) also knows the last event's time.
        disk = list(log._disk.items())
        cached = dict(log._cache.rings)

        def read_sqlite() -> Iterator[HeldChannel]:
            for name, bounds in disk:
                last_seq = bounds.last_seq
                ring = cached.get(name)
                ts = ring.last_ts_ms if ring is not None and ring.last_seq == last_seq else None
                yield name, last_seq, ts

        return read_sqlite
    views = getattr(log, "_views", None)  # redis: what this process has delivered
    held = list(views.items()) if isinstance(views, dict) else []

    def read_views() -> Iterator[HeldChannel]:
        for name, view in held:
            yield name, int(view.last), None

    return read_views
