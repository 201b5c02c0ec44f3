"""The replication reader: a thread that streams the slot into the hand-off.

psycopg2's replication API is blocking, so it gets a thread of its own; the event
loop never waits on PostgreSQL. The thread decodes and assembles transactions
(:mod:`.assembler`) and passes chunks through the bounded :mod:`.handoff`.

Feedback (the standby status update) is also sent from here, because a psycopg2
connection must only be used by one thread. It confirms ``progress.durable_end_lsn``
-- set by the event loop once the log has made a transaction durable -- never what
was merely received. Sending it every ``status_interval`` seconds, even while
blocked on a full hand-off, keeps the server from timing the connection out
(``wal_sender_timeout``); every 2 s by default, so that a ``wal_sender_timeout`` as
low as 5 s is safe -- the setting that bounds a takeover when a leader's machine
vanishes. When everything received is durable, psycopg2 confirms the WAL end of the
server's keepalives as well, so an idle slot (or one whose WAL is all about other
tables) does not make the server keep WAL forever.

Leadership: :meth:`ReplicationReader.connect` takes the slot's leader lock
(:mod:`.leader`) on the replication connection before anything is streamed, so the
reader that runs is the one leader, and it stops being leader when its connection ends.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from athena_cdc.sources.postgres.assembler import Chunk, TransactionAssembler
from athena_cdc.sources.postgres.errors import Standby
from athena_cdc.sources.postgres.handoff import Handoff
from athena_cdc.sources.postgres.leader import try_lead
from athena_cdc.sources.postgres.provision import classify, connect, quote_ident

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """LSNs shared by the reader thread and the event loop (plain int writes are atomic)."""

    handed_end_lsn: int = 0  # end of the last transaction handed to the loop (reader)
    durable_end_lsn: int = 0  # end of the last transaction durable in the log (loop)


class Stopped(Exception):
    """The reader was asked to stop while it waited."""


class ReplicationReader:
    """One replication connection, from ``connect`` to the end of ``run``."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        handoff: Handoff,
        progress: Progress,
        feedback_interval: float = 1.0,
        status_interval: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.handoff = handoff
        self.progress = progress
        self.feedback_interval = feedback_interval
        self.status_interval = status_interval
        self._stop = threading.Event()
        self._abandon = False  # stopping without waiting for the log (what we hold is stale)
        self._conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._cursor: psycopg2.extras.ReplicationCursor | None = None
        self._last_feedback = 0.0
        self._sent_flush = 0
        self.system_id = ""

    def connect(self) -> str:
        """Open the replication connection and take the slot's leader lock on it; return
        the server's system identifier. Raises :class:`Standby` (connection closed) when
        another process holds the lock."""
        conn = connect(self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            cur = conn.cursor()
            cur.execute("IDENTIFY_SYSTEM")
            row = cur.fetchone()
            leader = try_lead(cur, self.slot)
        except psycopg2.Error as exc:
            conn.close()
            raise classify(exc, self.dsn) from None
        if not leader:
            conn.close()
            raise Standby(f"another process holds the leader lock of slot {self.slot!r}")
        self._conn, self._cursor = conn, cur
        self.system_id = str(row[0])
        return self.system_id

    def close(self) -> None:
        """Close a connection that will not be ``run``."""
        if self._conn is not None:
            self._conn.close()

    def stop(self, abandon: bool = False) -> None:
        """Ask ``run`` to return (from any thread). ``abandon``: what was handed over will
        not be applied, so do not wait for it to become durable."""
        self._abandon = self._abandon or abandon
        self._stop.set()

    def run(self, assembler: TransactionAssembler, started: Callable[[], None]) -> None:
        """Stream until stopped or the connection fails (raises :class:`SourceError`)."""
        conn, cur = self._conn, self._cursor
        assert conn is not None and cur is not None, "connect() first"
        assembler.emit = self._hand_over
        try:
            cur.start_replication(
                slot_name=self.slot,
                slot_type=psycopg2.extras.REPLICATION_LOGICAL,
                decode=False,
                options={
                    "proto_version": "1",
                    # Quoted so that the name keeps its case (it is an identifier list).
                    "publication_names": quote_ident(self.publication),
                },
                status_interval=self.status_interval,
            )
            started()
            self._stream(cur, assembler)
            self._finish(cur)
        except Stopped:
            pass
        except psycopg2.Error as exc:
            raise classify(exc, self.dsn) from None
        finally:
            conn.close()

    def _stream(
        self, cur: psycopg2.extras.ReplicationCursor, assembler: TransactionAssembler
    ) -> None:
        feed = assembler.feed
        while not self._stop.is_set():
            message = cur.read_message()
            if message is not None:
                feed(message.payload)
                self._feedback(cur, time.monotonic())
                continue
            self._feedback(cur, time.monotonic())
            # Nothing buffered: sleep until the server sends something, waking up now
            # and then to notice a stop request and to send status updates.
            select.select([cur.connection], [], [], 0.2)

    def _hand_over(self, chunk: Chunk) -> None:
        """Queue a chunk for the loop, waiting while the hand-off is full."""
        while not self.handoff.put(chunk, timeout=0.5):
            if self._stop.is_set():
                raise Stopped
            # Still alive: without status updates the server drops us after
            # wal_sender_timeout while the log is slow.
            assert self._cursor is not None
            self._feedback(self._cursor, time.monotonic())
        if chunk.end_lsn is not None:
            self.progress.handed_end_lsn = chunk.end_lsn

    def _feedback(self, cur: psycopg2.extras.ReplicationCursor, now: float) -> None:
        durable = self.progress.durable_end_lsn
        since = now - self._last_feedback
        advanced = durable > self._sent_flush
        if (advanced and since >= self.feedback_interval) or since >= self.status_interval:
            # reply=True on the periodic update makes the server answer with a
            # keepalive, which tells us its WAL end (confirmed when we are idle).
            cur.send_feedback(
                write_lsn=self.progress.handed_end_lsn,
                flush_lsn=durable,
                apply_lsn=durable,
                reply=not advanced,
                force=True,
            )
            self._sent_flush = durable
            self._last_feedback = now

    def _finish(self, cur: psycopg2.extras.ReplicationCursor, timeout: float = 5.0) -> None:
        """On stop: wait a little for the loop to make what we handed durable, confirm it."""
        deadline = time.monotonic() + (0 if self._abandon else timeout)
        while (
            self.progress.durable_end_lsn < self.progress.handed_end_lsn
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        durable = self.progress.durable_end_lsn
        if durable:
            cur.send_feedback(flush_lsn=durable, apply_lsn=durable, force=True)
