"""Open WebSocket connections, the ones most behind first, paged.

Read from the hub's connections when asked; a connection is marked slow when its
socket stopped taking data or what waits for it passes half the slow-consumer limit
(at the limit it is closed with 4008).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass

from athena_cdc.console.cursor import decode_cursor, encode_cursor
from athena_cdc.hub.connection import Connection

SUBSCRIPTIONS_SHOWN = 20  # per connection; the count is always given

# Sort key, largest first: slow, queued bytes, oldest (negated open time), identity.
ConnectionKey = tuple[int, int, float, int]
_KEY_SHAPE = (int, int, float, int)


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    id: int
    client: str
    remote: str | None
    subscriptions: list[str]
    subscription_count: int
    queued_bytes: int
    age_s: float
    slow: bool
    closing: bool

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "client": self.client,
            "remote": self.remote,
            "subscriptions": self.subscriptions,
            "subscription_count": self.subscription_count,
            "queued_bytes": self.queued_bytes,
            "age_s": self.age_s,
            "slow": self.slow,
            "closing": self.closing,
        }


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    rows: list[ConnectionRow]
    next_cursor: str | None
    total: int
    slow: int


def is_slow(conn: Connection) -> bool:
    return conn.socket_full or conn.queued_bytes * 2 >= conn.limit


def connection_page(
    connections: Iterable[Connection], limit: int, cursor: str | None
) -> ConnectionPage:
    """One page of ``connections``; :class:`BadCursor` for a cursor not from here."""
    after = None if cursor is None else decode_cursor(cursor, _KEY_SHAPE)
    keyed: list[tuple[ConnectionKey, Connection]] = []
    slow_count = 0
    for conn in connections:
        slow = is_slow(conn)
        slow_count += slow
        keyed.append(((int(slow), conn.queued_bytes, -conn.opened_at, id(conn)), conn))
    candidates = iter(keyed)
    if after is not None:
        candidates = (item for item in candidates if item[0] < after)
    top = heapq.nlargest(limit + 1, candidates, key=lambda item: item[0])
    now = time.time()
    rows = [_row(key, conn, now) for key, conn in top[:limit]]
    next_cursor = encode_cursor(top[limit - 1][0]) if len(top) > limit else None
    return ConnectionPage(rows, next_cursor, len(keyed), slow_count)


def _row(key: ConnectionKey, conn: Connection, now: float) -> ConnectionRow:
    channels = conn.channels
    shown = heapq.nsmallest(SUBSCRIPTIONS_SHOWN, channels)  # first by name
    return ConnectionRow(
        id=key[3],
        client=conn.client_id,
        remote=conn.peer,
        subscriptions=shown,
        subscription_count=len(channels),
        queued_bytes=key[1],
        age_s=round(max(0.0, now - conn.opened_at), 1),
        slow=bool(key[0]),
        closing=conn.closing,
    )
