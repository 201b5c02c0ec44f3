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
- Memory: nothing per channel is loaded at start. What the process keeps of a
  channel -- its cached events, its bounds on the loop thread, its counters in the
  writer thread -- is loaded when the channel is used (one indexed SELECT) and
  forgotten, least recently used first, so that it all stays within ``memory_limit``.
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
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

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
from athena_cdc.log.ring import ChannelRing, RingSet, frame_cost
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
# Channel ids whose oldest event age retention checks per background round, so that
# no channel state need be kept for it: a primary-key lookup each (measured: 3.5 ms
# per 20,000), and a time-index lookup for each one with events to drop (5 ms per
# 1,000), in the writer thread. A table of N channels is swept every
# N / AGE_SWEEP_CHANNELS seconds (20 s for 100,000); an explicit prune() sweeps all.
AGE_SWEEP_CHANNELS = 5_000
LOAD_CHUNK = 500  # channel names per SELECT when bounds are loaded in bulk
# How soon the busy event-loop thread hands the GIL to the writer thread, while the log
# is open. A commit takes the GIL several times (around each sqlite call); at Python's
# default of 5 ms, a loop that is never idle (a steady stream of publishes) made every
# commit wait up to that long each time, and producers waiting for their 201 waited with
# it. Measured (tenants scenario, 8 producers, 2,000 publishes/s asked, on a loaded
# machine, 4 alternated pairs): p99 32-87 -> 31-40 ms, publishes/s held 639-916 ->
# 796-1,093, for ~8 % more server CPU. It costs nothing while no thread waits.
WRITER_SWITCH_INTERVAL_S = 0.0002

# Share of memory_limit for per-channel state; the rest is the cache of events.
# Loop thread: the bounds of recently used channels; writer thread: their counters.
BOUNDS_SHARE = 8  # 1/8
WRITER_SHARE = 16  # 1/16
STASH_SHARE = 8  # disk pages waiting to join the cache: at most 1/8 of the cache
# Only pages this large are kept aside: those of one long channel read page by page
# (1,000 then 2,000 events, log/travel.py); a merge of many channels reads small pages
# of each in turn, which would only replace one another.
STASH_MIN_PAGE = 1_000
# What one remembered channel costs besides its name's length (str header, ordered
# dict slot and link, the record and its ints), measured on CPython 3.11 with margin.
BOUNDS_ENTRY_BYTES = 384
WRITER_ENTRY_BYTES = 384


@dataclass(slots=True)
class _Channel:
    """Writer-thread view of a channel."""

    id: int
    first_seq: int
    last_seq: int
    last_ts_ms: int


@dataclass(slots=True)
class _DiskBounds:
    """Loop-thread view of a channel, as of the last append the hub was told of."""

    first_seq: int
    last_seq: int
    dropped_ts_ms: int | None

    def as_bounds(self) -> ChannelBounds:
        return ChannelBounds(self.first_seq, self.last_seq, self.dropped_ts_ms)


_NEW_CHANNEL = (1, 0, None)  # (first_seq, last_seq, dropped_ts_ms) of a channel not on disk


def bounds_cost(channel: str) -> int:
    return len(channel) + BOUNDS_ENTRY_BYTES


def writer_cost(channel: str) -> int:
    return len(channel) + WRITER_ENTRY_BYTES


_Work = tuple[list[NewEvent], SourcePosition | None, "asyncio.Future[list[Event]]"]


class DataDirLocked(Exception):
    pass


def _stored_log(con: sqlite3.Connection) -> tuple[StoredLog, int, int]:
    """The database's epoch (None: a new database, or one from a version without
    epochs) and its count of events ever appended: the sum of the channels' last seqs,
    kept by every append already, so counting costs appends nothing; with, from the
    same scan of the channels (about 0.2 s per million), how many channels and how many
    retained events there are."""
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    epoch = None
    if "meta" in tables:
        row = con.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        epoch = None if row is None else str(row[0])
    if "channels" not in tables:
        return StoredLog(epoch, 0), 0, 0  # a new (or emptied) database
    appended, channels, retained = con.execute(
        "SELECT coalesce(sum(last_seq), 0), count(*), "
        "coalesce(sum(last_seq - first_seq + 1), 0) FROM channels"
    ).fetchone()
    return StoredLog(epoch, int(appended)), int(channels), int(retained)


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
        commit_interval: float = 0.0,
        on_damage: str = "refuse",
    ) -> None:
        super().__init__()
        self.path = Path(data_dir) / "events.sqlite3"
        self._on_damage = on_damage  # "refuse" or "new-epoch"
        self._highwater = HighWaterFile(self.path.parent)
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._synchronous = synchronous.upper()
        # --sqlite-commit-interval: a commit starts at least this long after the last
        # one started. Each commit costs ~300 µs of CPU whatever it holds (fsync, WAL
        # frames, locks, the thread hop); at 2,000 single-event publishes/s commits
        # otherwise carry ~1.8 events each. Waiting only when the last commit is that
        # recent holds nothing back at low rates.
        self._commit_interval = commit_interval
        writer_bytes = memory_limit // WRITER_SHARE
        self._cache = RingSet(retention_events, memory_limit - writer_bytes)
        # Bounds of recently used channels, least recently used first; their cost is
        # the cache's ``reserved`` bytes, at most 1/BOUNDS_SHARE of the limit.
        self._disk: OrderedDict[str, _DiskBounds] = OrderedDict()
        self._disk_budget = memory_limit // BOUNDS_SHARE
        self._in_flight: set[str] = set()  # channels of the write under way: kept
        # Consecutive disk pages of one channel read oldest first that do not reach the
        # cache yet: (channel, events, their cost as the cache counts it); see _fill_cache.
        self._stash: tuple[str, list[Event], int] | None = None
        self._loop_con: sqlite3.Connection | None = None  # bounds() lookups
        # Owned by the writer thread: counters of recently appended channels, and the
        # channels over the count retention (name -> drop through seq).
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._channels_budget = writer_bytes
        self._channels_bytes = 0
        self._over_count: dict[str, int] = {}
        self._age_cursor = 0  # next channel id the age sweep looks at
        # Totals for /metrics, kept by the writer thread (read as plain ints).
        self._total_channels = 0
        self._total_events = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._wcon: sqlite3.Connection | None = None
        self._pending: list[_Work] = []
        self._flusher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._health: str | None = None
        self._lock_file: IO[str] | None = None
        self._last_commit_at = 0.0
        self.commits = 0  # number of group commits, for metrics and tests
        self._releaser = MemoryReleaser()
        self._switch_interval: float | None = None  # the process's, while the log is open

    # -- lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        loop = asyncio.get_running_loop()
        try:
            # Only totals: each channel's state is loaded when the channel is used.
            self._total_channels, self._total_events = await loop.run_in_executor(
                self._writer, self._open_writer
            )
        except BaseException as exc:
            await self._abandon_open()
            if isinstance(exc, sqlite3.DatabaseError) and _is_corruption(exc):
                raise LogDamaged(self._corrupt_message(str(exc))) from None
            raise
        log.info(
            "sqlite log %s: %d channels, epoch %s", self.path, self._total_channels, self.epoch
        )
        self._pruner = asyncio.create_task(self._prune_forever(), name="sqlite-retention")
        self._releaser.start()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, WRITER_SWITCH_INTERVAL_S))

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

    def _open_writer(self) -> tuple[int, int]:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._wcon = con  # closed by open() if what follows fails
        epoch, stored, channels, events = self._check_log(con)  # before anything is written
        con.execute("PRAGMA journal_mode=WAL")
        # Wait for a lock held by another process (a backup, an sqlite3 shell) instead
        # of failing appends at once.
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        con.execute(f"PRAGMA synchronous={self._synchronous}")
        con.executescript(SCHEMA)
        self._mark_running(con, epoch, stored)
        return channels, events

    async def close(self) -> None:
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        await self._releaser.stop()
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        loop = asyncio.get_running_loop()
        if self._wcon is not None:
            await loop.run_in_executor(self._writer, self._close_writer)
        if self._loop_con is not None:
            self._loop_con.close()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()

    # -- epoch and damage detection (see athena_cdc.log.epoch) -----------------------
    def _check_log(self, con: sqlite3.Connection) -> tuple[str, StoredLog, int, int]:
        """Writer thread, at open, reading only (a refused start changes nothing, so
        whatever is missing can be put back): check the database against seq-highwater.
        Returns the epoch to run under, what the database holds, and its numbers of
        channels and retained events; raises LogDamaged."""
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
        stored, channels, events = _stored_log(con)
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
        return epoch, stored, channels, events

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
        return await self.start_append(batch, position)

    def start_append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> asyncio.Future[list[Event]]:
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        # What the request's parsing left behind is worth giving back, refused or not.
        self._releaser.note_batch(batch)
        self._pending.append((list(batch), position, future))
        if self._flusher is None or self._flusher.done():
            # Starts on the next loop iteration: every append of this tick joins it.
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self._commit_interval:
                wait = self._last_commit_at + self._commit_interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # appends of the wait join this commit
                self._last_commit_at = loop.time()
            work, self._pending = self._pending, []
            # The hub is told of these channels' appends only after the commit; until
            # then bounds() must answer from memory, not from the disk that already
            # has them (a travel would send them twice): load and keep their bounds.
            self._in_flight = {item.channel for batch, _, _ in work for item in batch}
            try:
                await self._load_bounds(self._in_flight)
                results = await loop.run_in_executor(self._writer, self._write, work)
            except Exception as exc:
                self._in_flight = set()
                self._health = f"sqlite write failed: {exc}"
                failures.error("sqlite write failed, %d appends rejected: %s", len(work), exc)
                for _, _, future in work:
                    if not future.done():
                        future.set_exception(StorageUnavailable(self._health))
                continue
            self._health = None
            self.commits += 1
            appended: list[Event] = []
            disk = self._disk
            for (_, _, future), events in zip(work, results, strict=True):
                for event in events:
                    self._cache.add(event)
                    disk[event.channel].last_seq = event.seq
                appended.extend(events)
                if not future.done():  # a cancelled producer's events are still durable
                    future.set_result(events)
            self._in_flight = set()
            self._trim_bounds()
            self._notify(appended)

    def _write(self, work: list[_Work]) -> list[list[Event]]:
        """Writer thread: assign seqs, insert, commit once. All or nothing."""
        con = self._wcon
        assert con is not None
        now = now_ms()
        before: dict[str, tuple[int, int] | None] = {}  # to roll counters back
        results: list[list[Event]] = []
        rows: list[tuple[int, int, int, bytes]] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            for batch, position, _ in work:
                events: list[Event] = []
                for item in batch:
                    channel = self._channels.get(item.channel)
                    if channel is None:
                        channel = self._load_channel(item.channel)
                    if channel is None:
                        cursor = con.execute(
                            "INSERT INTO channels (name, first_seq, last_seq, last_ts_ms) "
                            "VALUES (?, 1, 0, 0)",
                            (item.channel,),
                        )
                        assert cursor.lastrowid is not None
                        channel = _Channel(cursor.lastrowid, 1, 0, 0)
                        self._remember_channel(item.channel, channel)
                        before[item.channel] = None
                    elif item.channel not in before:
                        before[item.channel] = (channel.last_seq, channel.last_ts_ms)
                        self._channels.move_to_end(item.channel)  # recently used
                    channel.last_seq += 1
                    channel.last_ts_ms = max(now, channel.last_ts_ms)
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
                    self._channels_bytes -= writer_cost(name)
                else:
                    channel = self._channels[name]
                    channel.last_seq, channel.last_ts_ms = old
            raise
        self._mark_committed(len(rows))
        self._total_events += len(rows)
        self._total_channels += sum(1 for old in before.values() if old is None)
        for name in before:
            channel = self._channels[name]
            if channel.last_seq - channel.first_seq + 1 > self._retention_events:
                self._over_count[name] = channel.last_seq - self._retention_events
        while self._channels_bytes > self._channels_budget and len(self._channels) > 1:
            name, _ = self._channels.popitem(last=False)  # least recently appended to
            self._channels_bytes -= writer_cost(name)
        return results

    def _load_channel(self, name: str) -> _Channel | None:
        """Writer thread: a channel's counters from disk (None: not there yet)."""
        con = self._wcon
        assert con is not None
        row = con.execute(
            "SELECT id, first_seq, last_seq, last_ts_ms FROM channels WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        channel = _Channel(*row)
        self._remember_channel(name, channel)
        return channel

    def _remember_channel(self, name: str, channel: _Channel) -> None:
        self._channels[name] = channel
        self._channels_bytes += writer_cost(name)

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
        # Never raises: callers take bounds before the travel that reports failures.
        # The travel's read then finds the disk failing and answers "unavailable".
        try:
            return self._bounds(channel)
        except StorageUnavailable:
            return EMPTY_BOUNDS

    def _bounds(self, channel: str) -> ChannelBounds:
        """bounds(), but a disk failure raises StorageUnavailable."""
        disk = self._disk.get(channel)
        if disk is None:
            disk = self._load_bounds_now(channel)
            if disk is None:
                return EMPTY_BOUNDS
        else:
            self._disk.move_to_end(channel)  # recently used
        return disk.as_bounds()

    def _load_bounds_now(self, channel: str) -> _DiskBounds | None:
        """A channel's bounds from disk, on the loop thread: one primary-key lookup.

        Only channels outside the write under way get here (those inside are kept in
        memory, see _flush), so the disk holds exactly what the hub was told of.
        """
        con = self._loop_con
        try:
            if con is None:
                con = self._loop_con = self._connect_reader()
            row = con.execute(
                "SELECT first_seq, last_seq, dropped_ts_ms FROM channels WHERE name = ?",
                (channel,),
            ).fetchone()
        except sqlite3.Error as exc:
            failures.error("sqlite read failed: %s", exc)
            raise StorageUnavailable(f"sqlite read failed: {exc}") from exc
        if row is None:
            return None  # not remembered: any name can be asked for
        disk = self._disk[channel] = _DiskBounds(*row)
        self._cache.reserved += bounds_cost(channel)
        self._trim_bounds()
        return disk

    async def _load_bounds(self, channels: Iterable[str]) -> None:
        """Load the bounds of the channels not in memory, in the reader pool (a channel
        not on disk yet gets the bounds of a new one)."""
        missing = [name for name in channels if name not in self._disk]
        if not missing:
            return
        found = await self._read(self._read_bounds, missing)
        for name in missing:
            if name not in self._disk:  # bounds() may have loaded it meanwhile
                self._disk[name] = _DiskBounds(*found.get(name, _NEW_CHANNEL))
                self._cache.reserved += bounds_cost(name)

    def _read_bounds(self, names: list[str]) -> dict[str, tuple[int, int, int | None]]:
        con = self._reader()
        found: dict[str, tuple[int, int, int | None]] = {}
        for start in range(0, len(names), LOAD_CHUNK):
            chunk = names[start : start + LOAD_CHUNK]
            marks = ",".join("?" * len(chunk))
            for name, first_seq, last_seq, dropped_ts in con.execute(
                "SELECT name, first_seq, last_seq, dropped_ts_ms FROM channels "
                f"WHERE name IN ({marks})",
                chunk,
            ):
                found[name] = (first_seq, last_seq, dropped_ts)
        return found

    def _trim_bounds(self) -> None:
        """Forget the least recently used bounds beyond their share of the limit (they
        are on disk), keeping those of the write under way; then fit the cache."""
        disk, cache = self._disk, self._cache
        kept: list[tuple[str, _DiskBounds]] = []
        while cache.reserved > self._disk_budget and disk:
            name, bounds = disk.popitem(last=False)
            if name in self._in_flight:
                kept.append((name, bounds))
            else:
                cache.reserved -= bounds_cost(name)
        for name, bounds in kept:
            disk[name] = bounds
        cache.fit()

    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        disk = self._bounds(channel)
        last = disk.last_seq if until_seq is None else min(until_seq, disk.last_seq)
        if disk.first_seq > last or (since_seq is not None and since_seq >= last):
            return []  # nothing retained up to ``last``, or nothing after the cursor
        ring = self._cache.ring(channel)
        if ring is not None and self._cache_covers(
            disk, ring, since_seq, since_ts_ms, limit, newest, last
        ):
            return ring.select(since_seq, since_ts_ms, limit, newest, last)
        events = await self._read(
            self._read_disk, channel, since_seq, since_ts_ms, limit, newest, last
        )
        self._fill_cache(channel, events)
        return events

    def _fill_cache(self, channel: str, events: list[Event]) -> None:
        """Keep what a disk read found when it joins the cache (typical after a restart,
        when the cache is empty and a client asks for the newest events).

        A travel from a cursor reads a channel oldest first, page by page, and only its
        last page reaches the cache's start: the pages before it are kept aside
        (``_stash``, one channel's run of consecutive pages of STASH_MIN_PAGE events or
        more, at most what the cache holds of a channel and 1/STASH_SHARE of its bytes)
        and join the cache with it.
        Without that, every repeat of a long travel went to the disk again (3x slower).
        """
        disk = self._disk.get(channel)
        if disk is None or not events:
            return
        stash = self._stash
        follows = (
            stash is not None and stash[0] == channel and stash[1][-1].seq + 1 == events[0].seq
        )
        retained = [e for e in events if e.seq >= disk.first_seq]
        if self._cache.add_older(channel, retained, disk.last_seq):
            self._set_stash(None)
            if stash is not None and follows:
                older = [e for e in stash[1] if e.seq >= disk.first_seq]
                self._cache.add_older(channel, older, disk.last_seq)
            return
        if len(events) < STASH_MIN_PAGE:
            return  # the stash, if any, stays: it may be another channel's
        size = sum(frame_cost(e.frame, channel) for e in events)
        if stash is not None and follows:
            run, size = stash[1], stash[2] + size
            run.extend(events)  # the stash's own list (a copy of the first page)
        else:
            run = list(events)
        fits = len(run) <= self._cache.per_channel and size <= self._cache.max_bytes // STASH_SHARE
        self._set_stash((channel, run, size) if fits else None)

    def _set_stash(self, stash: tuple[str, list[Event], int] | None) -> None:
        """Replace the stash; its bytes count against the cache's share of the limit."""
        cache = self._cache
        if self._stash is not None:
            cache.reserved -= self._stash[2]
        self._stash = stash
        if stash is not None:
            cache.reserved += stash[2]
            cache.fit()

    def _cache_covers(
        self,
        disk: ChannelBounds,
        ring: ChannelRing,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        last: int,
    ) -> bool:
        if ring.first_seq <= disk.first_seq:
            return True  # the cache holds everything retained
        if newest:
            return last - ring.first_seq + 1 >= limit
        if since_seq is not None and ring.covers_from(since_seq + 1):
            return True
        oldest = ring.oldest_ts()
        # Events before the cache have ts <= oldest, so none of them can match.
        return since_ts_ms is not None and oldest is not None and oldest < since_ts_ms

    def _connect_reader(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return con

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._connect_reader()
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
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return LogStats(self._total_channels, self._total_events, size)

    def health(self) -> str | None:
        return self._health

    # -- retention -----------------------------------------------------------------
    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            try:
                await self.prune(sweep_all=False)
            except Exception:
                log.exception("retention pruning failed; will retry")

    async def prune(self, *, sweep_all: bool = True) -> int:
        """Apply retention once; return the number of events dropped.

        Count retention applies to the channels appended to past it; age retention
        checks every channel (``sweep_all``) or, in the background, the next
        AGE_SWEEP_CHANNELS of them.
        """
        cutoff = None if self._retention_age is None else now_ms() - int(self._retention_age * 1000)
        if not self._over_count and cutoff is None:
            return 0
        loop = asyncio.get_running_loop()
        dropped = await loop.run_in_executor(self._writer, self._prune, cutoff, sweep_all)
        total = 0
        for name, (first_seq, through_seq, dropped_ts) in dropped.items():
            total += through_seq + 1 - first_seq
            disk = self._disk.get(name)
            if disk is not None:
                disk.first_seq = through_seq + 1
                disk.dropped_ts_ms = dropped_ts
            self._cache.drop_through(name, through_seq)
        return total

    def _aged_channels(self, cutoff_ts_ms: int, sweep_all: bool) -> dict[str, tuple[int, int]]:
        """Writer thread: {name: (id, newest seq older than the cutoff)} for the channels
        whose oldest retained event is older than the cutoff (a primary-key lookup per
        channel id looked at, and a time-index lookup per channel found)."""
        con = self._wcon
        assert con is not None
        low = 0 if sweep_all else self._age_cursor
        high = 2**63 - 1 if sweep_all else low + AGE_SWEEP_CHANNELS
        candidates = con.execute(
            "SELECT c.name, c.id FROM channels c "
            "JOIN events e ON e.channel_id = c.id AND e.seq = c.first_seq "
            "WHERE c.id > ? AND c.id <= ? AND e.ts_ms < ?",
            (low, high, cutoff_ts_ms),
        ).fetchall()
        if not sweep_all:
            more = con.execute("SELECT 1 FROM channels WHERE id > ? LIMIT 1", (high,)).fetchone()
            self._age_cursor = high if more else 0
        aged: dict[str, tuple[int, int]] = {}
        for name, channel_id in candidates:
            row = con.execute(
                "SELECT seq FROM events WHERE channel_id = ? AND ts_ms < ? "
                "ORDER BY ts_ms DESC, seq DESC LIMIT 1",
                (channel_id, cutoff_ts_ms),
            ).fetchone()
            if row is not None:
                aged[name] = (channel_id, row[0])
        return aged

    def _prune(self, cutoff_ts_ms: int | None, sweep_all: bool) -> dict[str, tuple[int, int, int]]:
        """Writer thread: delete old rows; return {channel: (first seq dropped, dropped
        through seq, its ts)}."""
        con = self._wcon
        assert con is not None
        targets: dict[str, tuple[int | None, int]] = {
            name: (None, through) for name, through in self._over_count.items()
        }
        if cutoff_ts_ms is not None:
            for name, (aged_id, through) in self._aged_channels(cutoff_ts_ms, sweep_all).items():
                targets[name] = (aged_id, max(through, targets.get(name, (None, 0))[1]))
        result: dict[str, tuple[int, int, int]] = {}
        if not targets:
            return result
        budget = PRUNE_ROUND_ROWS  # rows deleted per round, so appends never wait long
        done: list[str] = []
        con.execute("BEGIN IMMEDIATE")
        try:
            for name, (channel_id, target) in targets.items():
                if budget <= 0:
                    break  # the rest next round
                if channel_id is None:
                    row = con.execute("SELECT id FROM channels WHERE name = ?", (name,)).fetchone()
                    if row is None:
                        done.append(name)
                        continue
                    channel_id = row[0]
                first = con.execute(
                    "SELECT min(seq) FROM events WHERE channel_id = ?", (channel_id,)
                ).fetchone()[0]
                if first is None or first > target:
                    done.append(name)
                    continue
                through = min(target, first + min(PRUNE_CHUNK, budget) - 1)
                budget -= through - first + 1
                if through == target:
                    done.append(name)
                ts_row = con.execute(
                    "SELECT ts_ms FROM events WHERE channel_id = ? AND seq = ?",
                    (channel_id, through),
                ).fetchone()
                con.execute(
                    "DELETE FROM events WHERE channel_id = ? AND seq <= ?", (channel_id, through)
                )
                con.execute(
                    "UPDATE channels SET first_seq = ?, dropped_ts_ms = ? WHERE id = ?",
                    (through + 1, ts_row[0], channel_id),
                )
                result[name] = (first, through, ts_row[0])
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        for name in done:
            self._over_count.pop(name, None)
        for name, (first, through, _) in result.items():
            self._total_events -= through + 1 - first
            channel = self._channels.get(name)
            if channel is not None:
                channel.first_seq = through + 1
        return result
