"""How far a PostgreSQL source's replication slot is behind the server's WAL, in bytes.

The source itself knows only what it received; the WAL's end is the server's. When the
console asks, one query on an ordinary (not replication) connection compares the
slot's confirmed position with the current WAL position. The answer is kept for
:data:`CACHE_S`, so any number of viewers cost one query per few seconds, and the
connection is closed after :data:`IDLE_CLOSE_S` without a question (nobody looks).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg2

CACHE_S = 5.0
IDLE_CLOSE_S = 60.0
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 2000

LAG_QUERY = """
SELECT pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END,
           confirmed_flush_lsn)::bigint
  FROM pg_replication_slots WHERE slot_name = %s
"""


@dataclass(frozen=True, slots=True)
class SlotLag:
    lag_bytes: int | None
    error: str | None
    checked_at_ms: int


class SlotLagProbe:
    def __init__(self, dsn: str, slot: str) -> None:
        self._dsn = dsn
        self._slot = slot
        self._con: Any = None
        self._last: SlotLag | None = None
        self._last_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()  # one query at a time, in a worker thread
        self._pending: asyncio.Task[SlotLag] | None = None

    async def lag(self) -> SlotLag:
        """The slot's lag, at most :data:`CACHE_S` old."""
        loop = asyncio.get_running_loop()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = loop.call_later(IDLE_CLOSE_S, self.close)
        if self._last is not None and time.monotonic() - self._last_at < CACHE_S:
            return self._last
        if self._pending is None:
            self._pending = loop.create_task(asyncio.to_thread(self._query))
        pending = self._pending
        try:
            result = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending = None
        self._last, self._last_at = result, time.monotonic()
        return result

    def _query(self) -> SlotLag:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            try:
                if self._con is None:
                    self._con = psycopg2.connect(
                        self._dsn,
                        connect_timeout=CONNECT_TIMEOUT_S,
                        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                        application_name="athena-cdc console",
                    )
                    self._con.autocommit = True
                with self._con.cursor() as cur:
                    cur.execute(LAG_QUERY, (self._slot,))
                    row = cur.fetchone()
            except psycopg2.Error as exc:
                self._close_now()
                message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return SlotLag(None, f"cannot measure the slot's lag: {message}", now_ms)
        if row is None:
            return SlotLag(None, f"replication slot {self._slot!r} not found", now_ms)
        return SlotLag(None if row[0] is None else int(row[0]), None, now_ms)

    def close(self) -> None:
        """Close the connection unless a query is using it (then it stays for the next)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._lock.acquire(blocking=False):
            try:
                self._close_now()
            finally:
                self._lock.release()

    def _close_now(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(psycopg2.Error):
                con.close()
