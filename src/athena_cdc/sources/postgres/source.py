"""PostgresSource: PostgreSQL changes, exactly once, into the event log.

Pieces and the path of a change::

    PostgreSQL slot ─▶ reader thread ─▶ assembler ─▶ hand-off ─▶ consumer task ─▶ EventLog
                        (psycopg2)      (decode,      (bounded)   (group commit,
                          ▲              route)                    position in the
                          └──── feedback: flush LSN = durable ◀────── same write)

Exactly once: every append carries the position it brings the log to
(:class:`~athena_cdc.log.base.SourcePosition`, same durable write). On (re)start the
reader is told that position, and what the slot sends again at or before it is
decoded only to move past it. The flush LSN confirmed to PostgreSQL trails the log,
so the slot never forgets a change the log does not have.

Failures: PostgreSQL down, restarting or dropping the connection → :meth:`health`
says so, and the source reconnects with exponential backoff (0.5 s → 30 s) and
resumes from the slot. The log failing → the same batch is retried (it is all or
nothing) while the bounded hand-off stops the reader, and :meth:`health` says so.
Misconfiguration found at :meth:`start` → :class:`SourceConfigError`; that includes a
published table whose DELETEs could not be routed (:mod:`.identity`) unless
``--pg-unroutable`` allows a fallback. Such a table showing up while streaming stops
the stream at its first UPDATE or DELETE (:class:`UnroutableChange`): :meth:`health`
says why, and the source retries with backoff, never dropping the change silently.

Several processes (nodes, workers) with the same ``--source``: exactly one streams,
the *leader* -- the one whose replication connection holds the slot's advisory lock
(:mod:`.leader`); the others are *standbys* that try again every
``takeover_interval`` (1-1.5 s), so one of them takes over within a few seconds of
the leader's connection ending. A slot streamed by a connection without the lock
("replication slot ... is active for PID ...") is waited for the same way; after
``busy_grace`` seconds :meth:`health` reports it. A new leader resumes from the
position in the (shared) log, so what the slot sends again from its
``confirmed_flush_lsn`` that the old leader already appended is decoded only to be
skipped and confirmed. Every append also names the position it follows
(``SourcePosition.after``): a shared log refuses a batch when another writer got
there first (:class:`~athena_cdc.log.base.StalePosition`) -- a stale leader's late
append, or a new leader's -- and this process then drops what it read, steps down
and starts again from the log's position, so no row is appended twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence

import psycopg2.extensions

from athena_cdc.config import Settings
from athena_cdc.log.base import (
    EventLog,
    NewEvent,
    SourcePosition,
    StalePosition,
    StorageUnavailable,
)
from athena_cdc.sources.postgres.assembler import Chunk, TransactionAssembler
from athena_cdc.sources.postgres.errors import (
    SlotBusy,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
    Standby,
    UnroutableChange,
)
from athena_cdc.sources.postgres.handoff import Handoff
from athena_cdc.sources.postgres.identity import DEFAULT_CHANNEL, REFUSE, published_identities
from athena_cdc.sources.postgres.lsn import Position, format_lsn
from athena_cdc.sources.postgres.provision import Target, describe, provision
from athena_cdc.sources.postgres.reader import Progress, ReplicationReader
from athena_cdc.sources.postgres.routing import Router

log = logging.getLogger(__name__)


class PostgresSource:
    """Streams one PostgreSQL database's changes into ``log``."""

    def __init__(
        self,
        dsn: str,
        settings: Settings,
        log: EventLog,
        *,
        chunk_events: int = 5000,
        chunk_bytes: int = 4 * 1024 * 1024,
        handoff_bytes: int = 16 * 1024 * 1024,
        append_max_events: int = 10_000,
        append_max_bytes: int = 8 * 1024 * 1024,
        feedback_interval: float = 1.0,
        status_interval: float = 2.0,
        busy_grace: float = 10.0,
        max_backoff: float = 30.0,
        takeover_interval: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.settings = settings
        self.log = log
        self.name = f"postgres:{describe(dsn)}/{settings.pg_slot}"
        self.target = Target(settings.pg_slot, settings.pg_publication, tuple(settings.pg_tables))
        self.router = Router(
            settings.route_column,
            settings.default_channel,
            dict(settings.pg_table_channels),
            settings.pg_unroutable,
        )
        self.chunk_events = chunk_events
        self.chunk_bytes = chunk_bytes
        self.handoff_bytes = handoff_bytes
        self.append_max_events = append_max_events
        self.append_max_bytes = append_max_bytes
        self.feedback_interval = feedback_interval
        self.status_interval = status_interval
        self.busy_grace = busy_grace
        self.max_backoff = max_backoff
        self.takeover_interval = takeover_interval

        # -- metrics (read them, do not write them) --
        self.rows_applied = 0  # row changes appended to the log (a truncate counts once)
        self.rows_skipped = 0  # row changes without a channel
        # updates/deletes whose old channel was unknown, passed by --pg-unroutable's fallback
        self.rows_unroutable = 0
        self.events_appended = 0  # events appended (a row that changed channel makes two)
        self.transactions = 0  # transactions completely applied
        self.last_commit_lag_seconds: float | None = None  # commit in PG → durable in log
        self.last_commit_lsn: str | None = None
        self.reconnects = 0
        self.append_failures = 0
        self.leader = False  # this process streams the slot (holds its leader lock)
        self.stale_batches = 0  # batches refused because another writer got there first

        self.progress = Progress()
        self.handoff: Handoff | None = None
        self.position_key: str | None = None  # "postgres:<system id>/<slot>"
        self._applied: Position | None = None
        self._reader: ReplicationReader | None = None
        self._reader_done: asyncio.Future[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while nothing handed over waits to be applied
        self._stopping = False
        self._streaming = False  # a reader is running (between _open and its end)
        self._discarding = False  # dropping what the reader handed over (after a refusal)
        self._role = "not started"
        self._busy_since: float | None = None  # when the slot was first seen busy (no lock)
        self._health: str | None = "not started"
        self._append_error: str | None = None
        # An UnroutableChange stopped the stream: (why, commit LSN of its transaction).
        # Reported until the log is past that transaction, so /ready does not flap
        # between reconnects that stop there again.
        self._blocked: tuple[str, int] | None = None

    # -- public API ----------------------------------------------------------------------

    def health(self) -> str | None:
        """None while streaming; else why not (for ``/ready``)."""
        blocked = self._blocked
        if blocked is not None and (self._applied is None or self._applied < Position(blocked[1])):
            return f"{self.name}: {blocked[0]}"
        return self._append_error or self._health

    def role(self) -> str:
        """``leader``, ``standby`` (and why), or what the source is doing (for ``/ready``)."""
        return self._role

    @property
    def applied_position(self) -> str | None:
        return None if self._applied is None else str(self._applied)

    async def start(self) -> None:
        """Check PostgreSQL, create publication and slot, and start streaming.

        Raises :class:`SourceConfigError` if PostgreSQL is set up so that this cannot
        work. If PostgreSQL cannot be reached, or another process leads the slot,
        returns anyway with :meth:`health` / :meth:`role` saying so, and keeps trying in
        the background.
        """
        if self.router.unroutable == DEFAULT_CHANNEL and self.router.default_channel is None:
            raise SourceConfigError(
                "--pg-unroutable default-channel sends DELETEs without a channel to "
                "--default-channel: set --default-channel too, or use --pg-unroutable skip"
            )
        loop = asyncio.get_running_loop()
        self.handoff = Handoff(loop, self.handoff_bytes)
        self._consumer = loop.create_task(self._consume(), name=f"{self.name} consumer")
        self._health = self._role = "connecting"
        try:
            # Every process checks the setup at start (a standby too), so that a
            # misconfiguration is a startup error wherever it is.
            await asyncio.to_thread(provision, self.dsn, self.target, self._check_routes)
            await self._open()
        except SourceConfigError:
            await self._cancel(self._consumer)
            raise
        except (Standby, SlotBusy) as exc:
            self._wait_for_slot(exc)
        except SourceError as exc:
            self._health = f"{self.name}: {exc}; retrying"
            self._role = "not streaming"
            log.warning("%s: cannot start streaming yet: %s", self.name, exc)
        self._supervisor = loop.create_task(self._supervise(), name=f"{self.name} supervisor")

    async def stop(self) -> None:
        """Stop streaming; what was received is made durable first, when the log allows."""
        self._stopping = True
        if self._reader is not None:
            self._reader.stop()
        if self._reader_done is not None:
            # The thread ends within seconds (it waits at most 5 s for the log).
            await asyncio.wait([self._reader_done], timeout=15)
        await self._cancel(self._supervisor)
        if self.handoff is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), 5)
        await self._cancel(self._consumer)
        if self.leader:
            log.info("%s: stopped; no longer leader of slot %s", self.name, self.target.slot)
        self.leader = False
        self._health = self._role = "stopped"

    # -- connecting ----------------------------------------------------------------------

    async def _open(self) -> None:
        """Take the leader lock, provision, resume from the log's position, stream.

        Raises :class:`Standby` when another process leads, :class:`SlotBusy` when a
        connection without the lock streams the slot.
        """
        assert self.handoff is not None
        reader = ReplicationReader(
            self.dsn,
            self.target.slot,
            self.target.publication,
            self.handoff,
            Progress(),  # this connection's own: it confirms only what it handed over
            self.feedback_interval,
            self.status_interval,
        )
        system_id = await asyncio.to_thread(reader.connect)  # the leader lock, or Standby
        try:
            if self._stopping:
                raise asyncio.CancelledError
            await asyncio.to_thread(provision, self.dsn, self.target, self._check_routes)
            await self._resume_position(f"postgres:{system_id}/{self.target.slot}")
        except BaseException:
            reader.close()  # and with it the lock
            raise
        assembler = TransactionAssembler(
            self.router, _unset_emit, self._applied, self.chunk_events, self.chunk_bytes
        )
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._run_reader,
            args=(loop, reader, assembler, started, done),
            name=f"athena-cdc {self.name}",
            daemon=True,
        )
        # Whatever an earlier reader handed over is applied or dropped by now.
        self._discarding = False
        self.progress = reader.progress
        self._reader, self._reader_done = reader, done
        thread.start()
        await asyncio.wait([started, done], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            exc = done.exception()
            raise exc if exc is not None else SourceError("replication ended at once")
        self._streaming = self.leader = True
        self._busy_since = None
        self._health = None
        self._role = "leader"
        log.info(
            "%s: leader of slot %s: streaming after %s",
            self.name,
            self.target.slot,
            self._applied or "nothing (new)",
        )

    async def _resume_position(self, key: str) -> None:
        """Read where the log is, now that this process leads: another leader may have
        appended since this one last did (the log is the truth, not our memory)."""
        try:
            recorded = await self.log.get_position(key)
        except StorageUnavailable as exc:
            raise SourceUnavailable(
                f"cannot read the source position from the log: {exc}"
            ) from None
        stored = Position.parse(recorded) if recorded else None
        if key != self.position_key:
            self.position_key = key
            self._applied = stored
        elif stored is not None and (self._applied is None or stored > self._applied):
            # Our own eventless batches move _applied past the stored position, so the
            # later of the two is where the log is.
            self._applied = stored

    def _wait_for_slot(self, exc: Standby | SlotBusy) -> None:
        """Another process streams the slot: wait quietly as a standby."""
        if self._role != "standby":
            log.info(
                "%s: standby: %s; taking over when it stops", self.name, _first_clause(exc)
            )
        self._role = "standby"
        if isinstance(exc, Standby):
            self._busy_since = None
            self._health = None
            return
        # Streamed by a connection without our lock: a takeover in progress (the old
        # leader's connection lingers a moment), or a consumer that is not athena-cdc.
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since < self.busy_grace:
            self._health = None
            return
        reported = self._health
        self._health = (
            f"{self.name}: {exc}; no athena-cdc process holds its leader lock, so another "
            "consumer streams this slot: stop it or choose another --pg-slot"
        )
        if reported is None:  # once, not at every attempt
            log.warning("%s", self._health)

    def _takeover_delay(self) -> float:
        # Jittered, so that standbys started together do not knock at the same moment.
        return self.takeover_interval * random.uniform(1.0, 1.5)

    def _check_routes(self, cur: psycopg2.extensions.cursor) -> None:
        """Refuse (or, with a fallback, warn about) published tables whose DELETEs cannot
        be routed: their replica identity lacks the routing column."""
        tables = published_identities(cur, self.target.publication, self.router.route_column)
        unroutable = [t for t in tables if self.router.is_unroutable(t)]
        if not unroutable:
            return
        if self.router.unroutable != REFUSE:
            for table in unroutable:
                self.router.note_unroutable(table)
            return
        route = self.router.route_column
        first, others = unroutable[0], unroutable[1:]
        also = ""
        if others:
            fixes = " ".join(t.statement() for t in others)
            also = f"; likewise {len(others)} more: {fixes}"
        raise SourceConfigError(
            f"PostgreSQL {describe(self.dsn)}, publication {self.target.publication}: "
            f"{first.problem(route)}{also}; or accept a fallback for such DELETEs with "
            "--pg-unroutable default-channel or skip (see docs/postgres.md)"
        )

    @staticmethod
    def _run_reader(
        loop: asyncio.AbstractEventLoop,
        reader: ReplicationReader,
        assembler: TransactionAssembler,
        started: asyncio.Future[None],
        done: asyncio.Future[None],
    ) -> None:
        def resolve(future: asyncio.Future[None], exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)

        def on_started() -> None:
            loop.call_soon_threadsafe(resolve, started, None)

        try:
            reader.run(assembler, on_started)
        except BaseException as exc:  # handed to the loop, which decides what to do
            loop.call_soon_threadsafe(resolve, done, exc)
        else:
            loop.call_soon_threadsafe(resolve, done, None)

    async def _supervise(self) -> None:
        """Reconnect after the stream breaks, with exponential backoff; as a standby,
        try to take over every ``takeover_interval``."""
        backoff = 0.5
        delay = self._takeover_delay() if self._role == "standby" else backoff
        while not self._stopping:
            done = self._reader_done
            if self._streaming and done is not None:
                level, grow = logging.WARNING, False
                try:
                    await asyncio.shield(done)
                    reason = "replication stream ended"
                except UnroutableChange as exc:
                    # Reconnecting meets the same change again: an operator must act.
                    reason, level, grow = str(exc), logging.ERROR, True
                    self._blocked = (reason, exc.commit_lsn)
                except SourceError as exc:
                    reason = str(exc)
                except Exception as exc:
                    log.exception("%s: reader failed", self.name)
                    reason = f"reader failed: {exc!r}"
                self._streaming = self.leader = False
                if self._stopping:
                    return
                self.reconnects += 1
                self._health = f"{self.name}: {reason}; reconnecting"
                self._role = "not streaming"
                log.log(level, "%s: %s; no longer leader; reconnecting", self.name, reason)
                backoff = min(backoff * 2, self.max_backoff) if grow else 0.5
                delay = backoff
            # A new reader resumes from what is durable: apply what the old one handed over.
            await self._drained()
            await asyncio.sleep(delay)
            try:
                await self._open()
            except (Standby, SlotBusy) as exc:
                self._wait_for_slot(exc)
                backoff, delay = 0.5, self._takeover_delay()
            except SourceError as exc:
                self._health = f"{self.name}: {exc}; retrying in {backoff * 2:g}s"
                self._role = "not streaming"
                level = logging.ERROR if isinstance(exc, SourceConfigError) else logging.WARNING
                log.log(level, "%s: %s", self.name, exc)
                backoff = min(backoff * 2, self.max_backoff)
                delay = backoff

    async def _drained(self) -> None:
        """Wait until everything handed over has been applied."""
        # Only called once the reader has ended, so nothing new arrives meanwhile.
        await self._idle.wait()

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- applying ------------------------------------------------------------------------

    async def _consume(self) -> None:
        """Append handed-over chunks in order, several transactions per durable write."""
        assert self.handoff is not None
        while True:
            if not len(self.handoff):
                self._idle.set()
            batch = await self.handoff.get_batch(self.append_max_events, self.append_max_bytes)
            self._idle.clear()
            if self._discarding:
                continue
            try:
                await self._apply(batch)
            except StalePosition as exc:
                self._step_down(exc)

    def _step_down(self, exc: StalePosition) -> None:
        """Another writer appended beyond where this process believed the log was: what
        it read is stale. Drop it, end the stream (and so the leadership), and start
        again from the log's position -- as leader or standby, whoever gets the lock."""
        self.stale_batches += 1
        self._discarding = True
        self._append_error = None  # an earlier failed attempt may have been the one that landed
        log.warning(
            "%s: the log refused a batch (%s): another process leads or led the slot; "
            "dropping what this one read and stepping down",
            self.name,
            exc,
        )
        if self._reader is not None:
            self._reader.stop(abandon=True)

    async def _apply(self, batch: Sequence[Chunk]) -> None:
        # Chunks are in commit order, so the batch brings the log to the last one's position.
        position = batch[-1].position
        events = [event for chunk in batch for event in chunk.events]
        if events:
            assert self.position_key is not None
            # "0/0": before any transaction, so a log holding any position refuses it.
            after = str(self._applied or Position(0))
            await self._append(events, SourcePosition(self.position_key, str(position), after))
        if self._applied is None or position > self._applied:
            self._applied = position
        for chunk in batch:
            self.rows_applied += chunk.routed
            self.rows_skipped += chunk.skipped
            self.rows_unroutable += chunk.unroutable
            if chunk.end_lsn is not None:
                if not chunk.replayed:
                    self.transactions += 1
                self.progress.durable_end_lsn = max(self.progress.durable_end_lsn, chunk.end_lsn)
        self.events_appended += len(events)
        last = batch[-1]
        self.last_commit_lsn = format_lsn(last.position.commit_lsn)
        if not last.replayed:
            self.last_commit_lag_seconds = max(0.0, time.time() - last.commit_ts_us / 1e6)

    async def _append(self, events: list[NewEvent], position: SourcePosition) -> None:
        """Append, retrying the same all-or-nothing batch until the log takes it (or
        refuses it as stale, which no retry can change)."""
        delay = 0.1
        while True:
            try:
                await self.log.append(events, position=position)
            except (asyncio.CancelledError, StalePosition):
                raise
            except Exception as exc:
                self.append_failures += 1
                self._append_error = f"{self.name}: event log append failed: {exc}"
                log.warning("%s; retrying in %gs", self._append_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._append_error = None
                return


def _first_clause(exc: BaseException) -> str:
    return str(exc).split(";")[0]


def _unset_emit(chunk: Chunk) -> None:  # replaced by the reader before any message
    raise RuntimeError("assembler used before the reader set its emit callback")
