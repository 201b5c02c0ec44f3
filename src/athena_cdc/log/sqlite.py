"""The sqlite backend (default): a durable log in one file, with recent events cached.

- WAL mode, one writer thread. Appends made during one event-loop tick, and while
  the previous commit runs, are written in a single transaction: one commit (fsync)
  for many events, off the loop thread ("group commit"). Seq and ts are assigned in
  the writer thread, so a failed commit gives back its seqs.
- A producer's append returns only after its commit; listeners (the hub) are told
  right after, so nobody hears of an event that a crash could lose.
- Travels are served from the in-memory cache of recent events (already encoded)
  whenever it covers the requested range; otherwise from disk: the time index finds
  the start seq, then a range scan on the primary key (channel, seq) reads the rows.
- Retention (count per channel, and age) is enforced by a background task in the
  same writer thread, in bounded chunks so appends never wait long.
- The log's epoch is stored in the ``meta`` table; on open the database is checked
  against the ``seq-highwater`` file beside it, so that a lost WAL or a truncated or
  older database is never served under its old epoch (:mod:`athena_cdc.log.epoch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

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
from athena_cdc.log.epoch import (
    HighWaterFile,
    HighWaterUnreadable,
    LogDamaged,
    StoredLog,
    boot_id,
    damage,
    new_epoch,
)
from athena_cdc.log.memory import now_ms
from athena_cdc.log.ring import ChannelRing, RingSet
from athena_cdc.logging_limits import RateLimitedLog

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)  # a broken disk fails every request alike

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    first_seq     INTEGER NOT NULL,  -- oldest retained seq (last_seq + 1 if none)
    last_seq      INTEGER NOT NULL,  -- newest assigned seq, never reused
    -- (rows are never deleted: their sum of last_seq counts every event ever appended,
    -- which the damage check compares with seq-highwater; see athena_cdc.log.epoch)
    last_ts_ms    INTEGER NOT NULL,
    dropped_ts_ms INTEGER            -- ts of the newest event retention dropped
);
CREATE TABLE IF NOT EXISTS events (
    channel_id INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    payload    BLOB NOT NULL,        -- the payload's JSON, as received
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;
-- (channel_id, ts_ms) plus the implied primary key: finds the first seq at a time.
CREATE INDEX IF NOT EXISTS events_by_time ON events (channel_id, ts_ms);
CREATE TABLE IF NOT EXISTS source_positions (
    source   TEXT PRIMARY KEY,
    position TEXT NOT NULL
);
-- 'epoch': the log's epoch, checked against the seq-highwater file on open.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value NOT NULL
);
"""

_T = TypeVar("_T")

PRUNE_INTERVAL_S = 1.0
BUSY_TIMEOUT_MS = 5000
PRUNE_CHUNK = 50_000  # rows deleted per channel per round: keeps each write short
PRUNE_ROUND_ROWS = 200_000  # rows deleted per round over all channels


@dataclass(slots=True)
class _Channel:
    """Writer-thread view of a channel."""

    id: int
    last_seq: int
    last_ts_ms: int
    # ts of the oldest retained event (None: none retained): age retention only
    # queries the channels that have something old enough to drop.
    first_ts_ms: int | None = None


@dataclass(slots=True)
class _DiskBounds:
    """Loop-thread view of what the disk retains for a channel."""

    first_seq: int
    dropped_ts_ms: int | None


_Work = tuple[list[NewEvent], SourcePosition | None, "asyncio.Future[list[Event]]"]


class DataDirLocked(Exception):
    pass


def _stored_log(con: sqlite3.Connection) -> StoredLog:
    """The database's epoch (None: a new database, or one from a version without
    epochs) and its count of events ever appended: the sum of the channels' last seqs,
    kept by every append already, so counting costs appends nothing (and an open about
    0.2 s per million channels)."""
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    epoch = None
    if "meta" in tables:
        row = con.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        epoch = None if row is None else str(row[0])
    if "channels" not in tables:
        return StoredLog(epoch, 0)  # a new (or emptied) database
    total = con.execute("SELECT coalesce(sum(last_seq), 0) FROM channels").fetchone()[0]
    return StoredLog(epoch, int(total))


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


class SqliteLog(EventLog):
    name = "sqlite"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        retention_events: int = 100_000,
        retention_age: float | None = None,
        memory_limit: int = 512 * 1024**2,
        synchronous: str = "full",
        on_damage: str = "refuse",
    ) -> None:
        super().__init__()
        self.path = Path(data_dir) / "events.sqlite3"
        self._on_damage = on_damage  # "refuse" or "new-epoch"
        self._highwater = HighWaterFile(self.path.parent)
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._synchronous = synchronous.upper()
        self._cache = RingSet(retention_events, memory_limit)
        self._disk: dict[str, _DiskBounds] = {}
        self._channels: dict[str, _Channel] = {}  # owned by the writer thread
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._wcon: sqlite3.Connection | None = None
        self._pending: list[_Work] = []
        self._flusher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._health: str | None = None
        self._lock_file: IO[str] | None = None
        self.commits = 0  # number of group commits, for metrics and tests

    # -- lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(self._writer, self._open_writer)
        except BaseException as exc:
            await self._abandon_open()
            if isinstance(exc, sqlite3.DatabaseError) and _is_corruption(exc):
                raise LogDamaged(self._corrupt_message(str(exc))) from None
            raise
        for name, cid, first_seq, last_seq, last_ts, dropped_ts, first_ts in rows:
            self._channels[name] = _Channel(cid, last_seq, last_ts, first_ts)
            self._cache.ensure(name, last_seq, last_ts)
            self._disk[name] = _DiskBounds(first_seq, dropped_ts)
        log.info("sqlite log %s: %d channels, epoch %s", self.path, len(rows), self.epoch)
        self._pruner = asyncio.create_task(self._prune_forever(), name="sqlite-retention")

    def _lock_data_dir(self) -> None:
        # Two servers appending to one file would assign the same seqs twice.
        lock_path = self.path.parent / "athena-cdc.lock"
        self._lock_file = lock_path.open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirLocked(
                f"data dir {self.path.parent} is in use by another athena-cdc process; "
                "stop it or choose another --data-dir"
            ) from None

    def _open_writer(self) -> list[tuple[str, int, int, int, int, int | None, int | None]]:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._wcon = con  # closed by open() if what follows fails
        checked = self._check_log(con)  # before anything is written
        con.execute("PRAGMA journal_mode=WAL")
        # Wait for a lock held by another process (a backup, an sqlite3 shell) instead
        # of failing appends at once.
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        con.execute(f"PRAGMA synchronous={self._synchronous}")
        con.executescript(SCHEMA)
        self._mark_running(con, *checked)
        return con.execute(
            "SELECT c.name, c.id, c.first_seq, c.last_seq, c.last_ts_ms, c.dropped_ts_ms, e.ts_ms "
            "FROM channels c LEFT JOIN events e ON e.channel_id = c.id AND e.seq = c.first_seq"
        ).fetchall()

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        loop = asyncio.get_running_loop()
        if self._wcon is not None:
            await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()

    # -- epoch and damage detection (see athena_cdc.log.epoch) -----------------------
    def _check_log(self, con: sqlite3.Connection) -> tuple[str, StoredLog]:
        """Writer thread, at open, reading only (a refused start changes nothing, so
        whatever is missing can be put back): check the database against seq-highwater.
        Returns the epoch to run under and what the database holds; raises LogDamaged."""
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        unreadable = None
        try:
            mark = self._highwater.read()
        except HighWaterUnreadable as exc:
            mark, unreadable = None, f"{self._highwater.path.name} is unreadable ({exc})"
        if mark is None or not mark.clean:
            # After a stop that was not clean (or at the first start of a data dir): is
            # the file sound? It reads the whole file, 1.4-4.4 s per GB measured, so it
            # does not run after a clean stop.
            self._quick_check(con)
        stored = _stored_log(con)
        problem = unreadable or damage(stored, mark, synchronous=self._synchronous, boot=boot_id())
        if problem is not None:
            if self._on_damage != "new-epoch":
                raise LogDamaged(
                    f"data dir {self.path.parent}: {problem}. Put back what is missing "
                    "and restart, or start with --on-damage new-epoch to continue under a "
                    "new epoch (clients then start every channel over)"
                )
            epoch = new_epoch()
            log.warning(
                "sqlite log %s: %s; continuing under the new epoch %s (was %s): clients "
                "start every channel over",
                self.path,
                problem,
                epoch,
                stored.epoch or (mark.epoch if mark else None),
            )
        elif stored.epoch is not None:
            epoch = stored.epoch
        else:  # a new data dir, one from a version without epochs, or a start cut short
            epoch = mark.epoch if mark is not None else new_epoch()
        return epoch, stored

    def _mark_running(self, con: sqlite3.Connection, epoch: str, stored: StoredLog) -> None:
        """Writer thread, at open: store the epoch, and mark the log running (an
        unclean stop until :meth:`close` says otherwise)."""
        # The file first: if the process dies between the two writes, the next open
        # sees a database without the epoch (adopted) or with another one (damage).
        self._highwater.start(epoch, stored.appended)
        if epoch != stored.epoch:
            con.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (epoch,),
            )
        self.epoch = epoch

    def _quick_check(self, con: sqlite3.Connection) -> None:
        result = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        if result != "ok":
            raise LogDamaged(self._corrupt_message(str(result)))

    def _corrupt_message(self, detail: str) -> str:
        return (
            f"data dir {self.path.parent}: {self.path.name} is corrupt ({detail}). Restore "
            "the data dir from a backup, or move it aside to start an empty log"
        )

    def _mark_committed(self, count: int) -> None:
        """Writer thread, after a commit and before anybody hears of its events."""
        try:
            self._highwater.committed(count)
        except OSError as exc:
            # The events are committed; only damage detection is weakened.
            log.error("cannot update %s: %s", self._highwater.path, exc)

    def _close_writer(self) -> None:
        con = self._wcon
        assert con is not None
        clean = False
        try:
            # Syncs the WAL (with synchronous=normal a commit does not) before the
            # high-water file says the stop was clean.
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            con.close()
            clean = True
        finally:
            self._highwater.close(clean=clean)

    async def _abandon_open(self) -> None:
        """Release what a failed open took, so the data dir can be opened again."""
        loop = asyncio.get_running_loop()
        if self._wcon is not None:
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(self._writer, self._wcon.close)
            self._wcon = None
        with contextlib.suppress(OSError):
            self._highwater.close(clean=False)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()

    # -- appends -------------------------------------------------------------------
    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(batch), position, future))
        if self._flusher is None or self._flusher.done():
            # Starts on the next loop iteration: every append of this tick joins it.
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            work, self._pending = self._pending, []
            try:
                results = await loop.run_in_executor(self._writer, self._write, work)
            except Exception as exc:
                self._health = f"sqlite write failed: {exc}"
                failures.error("sqlite write failed, %d appends rejected: %s", len(work), exc)
                for _, _, future in work:
                    if not future.done():
                        future.set_exception(StorageUnavailable(self._health))
                continue
            self._health = None
            self.commits += 1
            appended: list[Event] = []
            for (_, _, future), events in zip(work, results, strict=True):
                for event in events:
                    self._cache.add(event)
                    self._disk.setdefault(event.channel, _DiskBounds(event.seq, None))
                appended.extend(events)
                if not future.done():  # a cancelled producer's events are still durable
                    future.set_result(events)
            self._notify(appended)

    def _write(self, work: list[_Work]) -> list[list[Event]]:
        """Writer thread: assign seqs, insert, commit once. All or nothing."""
        con = self._wcon
        assert con is not None
        now = now_ms()
        before: dict[str, tuple[int, int, int | None] | None] = {}  # to roll counters back
        results: list[list[Event]] = []
        rows: list[tuple[int, int, int, bytes]] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            for batch, position, _ in work:
                events: list[Event] = []
                for item in batch:
                    channel = self._channels.get(item.channel)
                    if channel is None:
                        cursor = con.execute(
                            "INSERT INTO channels (name, first_seq, last_seq, last_ts_ms) "
                            "VALUES (?, 1, 0, 0)",
                            (item.channel,),
                        )
                        assert cursor.lastrowid is not None
                        channel = self._channels[item.channel] = _Channel(cursor.lastrowid, 0, 0)
                        before[item.channel] = None
                    elif item.channel not in before:
                        before[item.channel] = (
                            channel.last_seq,
                            channel.last_ts_ms,
                            channel.first_ts_ms,
                        )
                    channel.last_seq += 1
                    channel.last_ts_ms = max(now, channel.last_ts_ms)
                    if channel.first_ts_ms is None:
                        channel.first_ts_ms = channel.last_ts_ms
                    rows.append((channel.id, channel.last_seq, channel.last_ts_ms, item.payload))
                    events.append(
                        Event.build(
                            item.channel, channel.last_seq, channel.last_ts_ms, item.payload
                        )
                    )
                if position is not None:
                    con.execute(
                        "INSERT INTO source_positions (source, position) VALUES (?, ?) "
                        "ON CONFLICT (source) DO UPDATE SET position = excluded.position",
                        (position.source, position.position),
                    )
                results.append(events)
            con.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            con.executemany(
                "UPDATE channels SET last_seq = ?, last_ts_ms = ? WHERE id = ?",
                [
                    (c.last_seq, c.last_ts_ms, c.id)
                    for c in (self._channels[name] for name in before)
                ],
            )
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            for name, old in before.items():
                if old is None:
                    del self._channels[name]
                else:
                    channel = self._channels[name]
                    channel.last_seq, channel.last_ts_ms, channel.first_ts_ms = old
            raise
        self._mark_committed(len(rows))
        return results

    async def get_position(self, source: str) -> str | None:
        return await self._read(self._get_position, source)

    async def _read(self, read: Callable[..., _T], *args: object) -> _T:
        """Run a read in the reader pool; sqlite errors become StorageUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, read, *args)
        except sqlite3.Error as exc:
            failures.error("sqlite read failed: %s", exc)
            raise StorageUnavailable(f"sqlite read failed: {exc}") from exc

    def _get_position(self, source: str) -> str | None:
        row = (
            self._reader()
            .execute("SELECT position FROM source_positions WHERE source = ?", (source,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    # -- reads ---------------------------------------------------------------------
    def bounds(self, channel: str) -> ChannelBounds:
        ring = self._cache.ring(channel)
        disk = self._disk.get(channel)
        if ring is None or disk is None:
            return EMPTY_BOUNDS
        return ChannelBounds(disk.first_seq, ring.last_seq, disk.dropped_ts_ms)

    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        ring = self._cache.ring(channel)
        if ring is None:
            return []
        last = ring.last_seq if until_seq is None else min(until_seq, ring.last_seq)
        if self._cache_covers(channel, ring, since_seq, since_ts_ms, limit, newest, last):
            return ring.select(since_seq, since_ts_ms, limit, newest, last)
        events = await self._read(
            self._read_disk, channel, since_seq, since_ts_ms, limit, newest, last
        )
        self._fill_cache(channel, events)
        return events

    def _fill_cache(self, channel: str, events: list[Event]) -> None:
        """Keep what a disk read found when it joins the cache (typical after a restart,
        when the cache is empty and a client asks for the newest events)."""
        disk = self._disk.get(channel)
        if disk is not None:
            retained = [e for e in events if e.seq >= disk.first_seq]
            self._cache.add_older(channel, retained)

    def _cache_covers(
        self,
        channel: str,
        ring: ChannelRing,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        last: int,
    ) -> bool:
        disk = self._disk.get(channel)
        if disk is None or ring.first_seq <= disk.first_seq:
            return True  # the cache holds everything retained
        if newest:
            return last - ring.first_seq + 1 >= limit
        if since_seq is not None and ring.covers_from(since_seq + 1):
            return True
        oldest = ring.oldest_ts()
        # Events before the cache have ts <= oldest, so none of them can match.
        return since_ts_ms is not None and oldest is not None and oldest < since_ts_ms

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.con = con
        return con

    def _read_disk(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        last: int,
    ) -> list[Event]:
        con = self._reader()
        row = con.execute("SELECT id FROM channels WHERE name = ?", (channel,)).fetchone()
        if row is None:
            return []
        channel_id = row[0]
        start = (since_seq or 0) + 1
        if since_ts_ms is not None:
            # Time index gives the start seq; ts never decreases, so every later seq matches.
            hit = con.execute(
                "SELECT seq FROM events WHERE channel_id = ? AND ts_ms >= ? "
                "ORDER BY ts_ms, seq LIMIT 1",
                (channel_id, since_ts_ms),
            ).fetchone()
            if hit is None:
                return []
            start = max(start, hit[0])
        order = "DESC" if newest else "ASC"
        rows = con.execute(
            f"SELECT seq, ts_ms, payload FROM events WHERE channel_id = ? "
            f"AND seq BETWEEN ? AND ? ORDER BY seq {order} LIMIT ?",
            (channel_id, start, last, limit),
        ).fetchall()
        if newest:
            rows.reverse()
        build = Event.build
        return [build(channel, seq, ts, payload) for seq, ts, payload in rows]

    def stats(self) -> LogStats:
        events = sum(
            ring.last_seq - disk.first_seq + 1
            for name, disk in self._disk.items()
            if (ring := self._cache.ring(name)) is not None
        )
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return LogStats(len(self._disk), events, size)

    def health(self) -> str | None:
        return self._health

    # -- retention -----------------------------------------------------------------
    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            try:
                await self.prune()
            except Exception:
                log.exception("retention pruning failed; will retry")

    async def prune(self) -> int:
        """Apply retention once; return the number of events dropped."""
        by_count: dict[str, int] = {}
        for name, disk in self._disk.items():
            ring = self._cache.ring(name)
            if ring is not None and ring.last_seq - disk.first_seq + 1 > self._retention_events:
                by_count[name] = ring.last_seq - self._retention_events
        cutoff = None if self._retention_age is None else now_ms() - int(self._retention_age * 1000)
        if not by_count and cutoff is None:
            return 0
        loop = asyncio.get_running_loop()
        dropped = await loop.run_in_executor(self._writer, self._prune, by_count, cutoff)
        total = 0
        for name, (through_seq, dropped_ts) in dropped.items():
            disk = self._disk[name]
            total += through_seq + 1 - disk.first_seq
            disk.first_seq = through_seq + 1
            disk.dropped_ts_ms = dropped_ts
            self._cache.drop_through(name, through_seq)
        return total

    def _prune(
        self, by_count: dict[str, int], cutoff_ts_ms: int | None
    ) -> dict[str, tuple[int, int]]:
        """Writer thread: delete old rows; return {channel: (dropped through seq, its ts)}."""
        con = self._wcon
        assert con is not None
        targets: dict[str, int] = dict(by_count)
        if cutoff_ts_ms is not None:
            for name, channel in self._channels.items():
                if channel.first_ts_ms is None or channel.first_ts_ms >= cutoff_ts_ms:
                    continue  # nothing old enough: no query
                row = con.execute(
                    "SELECT seq FROM events WHERE channel_id = ? AND ts_ms < ? "
                    "ORDER BY ts_ms DESC, seq DESC LIMIT 1",
                    (channel.id, cutoff_ts_ms),
                ).fetchone()
                if row is not None:
                    targets[name] = max(targets.get(name, 0), row[0])
        result: dict[str, tuple[int, int]] = {}
        if not targets:
            return result
        new_first_ts: dict[str, int | None] = {}
        budget = PRUNE_ROUND_ROWS  # rows deleted per round, so appends never wait long
        con.execute("BEGIN IMMEDIATE")
        try:
            for name, through in targets.items():
                if budget <= 0:
                    break  # the rest next round
                channel = self._channels[name]
                first = con.execute(
                    "SELECT min(seq) FROM events WHERE channel_id = ?", (channel.id,)
                ).fetchone()[0]
                if first is None or first > through:
                    continue
                through = min(through, first + min(PRUNE_CHUNK, budget) - 1)
                budget -= through - first + 1
                ts_row = con.execute(
                    "SELECT ts_ms FROM events WHERE channel_id = ? AND seq = ?",
                    (channel.id, through),
                ).fetchone()
                con.execute(
                    "DELETE FROM events WHERE channel_id = ? AND seq <= ?", (channel.id, through)
                )
                con.execute(
                    "UPDATE channels SET first_seq = ?, dropped_ts_ms = ? WHERE id = ?",
                    (through + 1, ts_row[0], channel.id),
                )
                following = con.execute(
                    "SELECT ts_ms FROM events WHERE channel_id = ? AND seq = ?",
                    (channel.id, through + 1),
                ).fetchone()
                new_first_ts[name] = None if following is None else following[0]
                result[name] = (through, ts_row[0])
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        for name, first_ts in new_first_ts.items():
            self._channels[name].first_ts_ms = first_ts
        return result
