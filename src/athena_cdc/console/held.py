"""What the event log already holds in memory about its channels, without any I/O.

The console lists channels from this, and from the hub's subscribed channels, rather
than from the store: a full scan of a store's channels (a table of millions of rows
for sqlite, keys in Redis) per request would cost what the console must not. Each
backend keeps the channels it used recently in memory -- all of them for the memory
store -- which are the ones worth looking at; any other channel is found by its exact
name (:meth:`EventLog.bounds`).

This reads the backends' own per-channel state, read-only, on the event-loop thread
(where the backends change it), so nothing is copied or tracked per event for it.
"""

from __future__ import annotations

from collections.abc import Iterator

from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import _TS_BITS, _TS_MASK, MemoryLog
from athena_cdc.log.sqlite import SqliteLog

# (channel, last_seq, last_ts_ms); last_ts_ms None when the log holds only the seq.
HeldChannel = tuple[str, int, int | None]


def held_channels(log: EventLog) -> Iterator[HeldChannel]:
    """Every channel ``log`` holds in memory, each once, with its last seq and time."""
    if isinstance(log, MemoryLog):
        for ring in log._rings.rings.values():
            yield ring.channel, ring.last_seq, ring.last_ts_ms
        for name, packed in log._counters.items():
            yield name, packed >> _TS_BITS, packed & _TS_MASK
    elif isinstance(log, SqliteLog):
        # _disk has the exact last seq of every channel used lately; the cache of
        # recent events (a subset) also knows the last event's time.
        rings = log._cache.rings
        for name, bounds in log._disk.items():
            cached = rings.get(name)
            ts = None
            if cached is not None and cached.last_seq == bounds.last_seq:
                ts = cached.last_ts_ms
            yield name, bounds.last_seq, ts
    else:
        views = getattr(log, "_views", None)  # redis: what this process delivered
        if isinstance(views, dict):
            for name, view in views.items():
                yield name, int(view.last), None
