"""The hub: which connections are subscribed to which channel, and fan-out.

The hub is the log's listener. For each appended batch it groups events by channel,
frames are already in the events, joins them once per channel, and hands the same
``bytes`` object to every subscriber of that channel. Cost per batch is one join per
channel plus one list append per subscriber: it depends on the subscribers of the
channel at hand, never on how many channels the node has.

Connections that received something are flushed once at the end of the loop tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, KeysView, Sequence

from athena_cdc.hub.connection import Batch, Connection
from athena_cdc.log.base import Event
from athena_cdc.logging_limits import RateLimitedLog
from athena_cdc.metrics import Metrics

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)


class Hub:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._subscribers: dict[str, dict[Connection, None]] = {}
        self.connections: set[Connection] = set()
        self._dirty: list[Connection] = []
        self._flush_scheduled = False
        self._metrics = metrics or Metrics()

    # -- membership ------------------------------------------------------------------
    def add(self, conn: Connection) -> None:
        self.connections.add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for channel in list(conn.channels):
            self.unsubscribe(conn, channel)

    def subscribe(self, conn: Connection, channel: str) -> bool:
        """Subscribe; False if it already was."""
        if channel in conn.channels:
            return False
        conn.channels.add(channel)
        # A dict keeps insertion order and O(1) removal.
        self._subscribers.setdefault(channel, {})[conn] = None
        return True

    def unsubscribe(self, conn: Connection, channel: str) -> bool:
        if channel not in conn.channels:
            return False
        conn.channels.discard(channel)
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(conn, None)
            if not subscribers:
                del self._subscribers[channel]
        return True

    @property
    def subscription_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    # -- read-only views (the ops console; asked per request, never per event) ----------
    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    def subscribed_channels(self) -> KeysView[str]:
        return self._subscribers.keys()

    # -- fan-out ---------------------------------------------------------------------
    def has_subscribers(self, channel: str) -> bool:
        return bool(self._subscribers.get(channel))

    def on_append(self, events: Sequence[Event]) -> None:
        """Log listener: deliver durable events to the subscribers of their channels."""
        subscribers = self._subscribers
        if len(events) == 1:  # the common case of single-event publishes
            event = events[0]
            subs = subscribers.get(event.channel)
            if subs:
                self._fan_out(Batch(event.channel, events, event.frame), subs)
            return
        by_channel: dict[str, list[Event]] = {}
        for event in events:
            if event.channel in subscribers:
                by_channel.setdefault(event.channel, []).append(event)
        for channel, channel_events in by_channel.items():
            blob = b"".join([e.frame for e in channel_events])
            self._fan_out(Batch(channel, channel_events, blob), subscribers[channel])

    def _fan_out(self, batch: Batch, subs: Iterable[Connection]) -> None:
        count = 0
        for conn in subs:
            conn.deliver(batch)
            count += 1
        self._metrics.delivered.inc(count * len(batch.events))

    def mark_dirty(self, conn: Connection) -> None:
        """Connection callback: it has bytes to write this tick."""
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:
                # One connection's failure must not end the loop: every connection
                # after it has its "dirty" mark set and would never be queued again
                # (its live stream stopped for good, without a gap to show it).
                failures.exception("client %r: writing failed: dropped", conn.client_id)
                conn.abort()

    def close_all(self, code: int, reason: str) -> None:
        self.flush()
        for conn in list(self.connections):
            conn.close(code, reason)
