"""Decoded pgoutput messages → chunks of events ready to append, with their position.

Pure (no I/O): the reader thread feeds it message payloads and passes on the
:class:`Chunk` objects it emits. A transaction becomes one chunk at its commit, or,
when it is large, several: a chunk is emitted as soon as ``chunk_events`` events or
``chunk_bytes`` bytes are pending, so memory stays bounded however big the
transaction. Only the last chunk of a transaction carries ``end_lsn`` (the LSN that
may be confirmed to the server); the others carry a partial position
(``commit_lsn#changes``) that makes a restart in the middle of a transaction resume
after the last applied change instead of appending it twice (see :mod:`.lsn`).

``resume`` is what the log already holds: transactions (or leading changes of a
transaction) at or before it are decoded only to be counted, and their chunks have
no events, so that the slot can still be confirmed past them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from athena_cdc.log.base import NewEvent
from athena_cdc.sources.postgres import pgoutput
from athena_cdc.sources.postgres.errors import DecodeError, UnroutableChange
from athena_cdc.sources.postgres.identity import REFUSE, TableIdentity, from_relation
from athena_cdc.sources.postgres.lsn import COMPLETE, Position, format_lsn
from athena_cdc.sources.postgres.routing import Router
from athena_cdc.sources.postgres.values import Converter, converter_for

UNCHANGED = pgoutput.UNCHANGED


@dataclass(slots=True)
class Chunk:
    """Events of (part of) one transaction, in commit order."""

    events: list[NewEvent]
    position: Position  # where the log is once these events are in it
    end_lsn: int | None  # set on a transaction's last chunk: confirmable to the server
    commit_ts_us: int
    changes: int = 0  # row changes decoded into this chunk (routed or skipped)
    routed: int = 0  # changes that became at least one event
    skipped: int = 0  # changes that had no channel
    unroutable: int = 0  # updates/deletes whose old channel was unknown (a fallback applied)
    nbytes: int = 0
    replayed: bool = False  # already in the log: decoded only to move past it


@dataclass(slots=True)
class TableInfo:
    """A relation as the assembler needs it: names, converters, routing index."""

    relation: pgoutput.Relation
    qualified: str
    names: list[str]
    converters: list[Converter]
    is_key: list[bool]
    route_index: int | None
    channel: str | None  # per-table override
    identity: TableIdentity
    unroutable: bool  # the old row of an update/delete lacks the routing column

    @classmethod
    def build(cls, relation: pgoutput.Relation, router: Router) -> TableInfo:
        names = [c.name for c in relation.columns]
        qualified = f"{relation.schema}.{relation.name}"
        route = router.route_column
        identity = from_relation(relation, route)
        return cls(
            relation,
            qualified,
            names,
            [converter_for(c.type_oid) for c in relation.columns],
            [c.is_key for c in relation.columns],
            names.index(route) if route in names else None,
            router.table_channel(qualified),
            identity,
            router.is_unroutable(identity),
        )

    def row(
        self, values: list[pgoutput.Value], key_only: bool
    ) -> tuple[dict[str, object], list[str]]:
        """The row as a dict, and the names of unchanged TOASTed columns left out."""
        out: dict[str, object] = {}
        unchanged: list[str] = []
        for name, convert, raw, is_key in zip(
            self.names, self.converters, values, self.is_key, strict=False
        ):
            if key_only and not is_key:
                continue
            if raw is None:
                out[name] = None
            elif raw is UNCHANGED:
                unchanged.append(name)
            else:
                out[name] = convert(raw)
        return out, unchanged

    def route_value(self, values: list[pgoutput.Value] | None) -> bytes | None:
        if values is None or self.route_index is None or self.route_index >= len(values):
            return None
        raw = values[self.route_index]
        return None if raw is UNCHANGED else raw

    def route_unchanged(self, values: list[pgoutput.Value]) -> bool:
        """Whether the routing column is an unchanged TOASTed value (not sent)."""
        index = self.route_index
        return index is not None and index < len(values) and values[index] is UNCHANGED

    def old_has_route(self, old: list[pgoutput.Value] | None, old_is_key: bool) -> bool:
        """Whether an old row image holds the routing column (a key-only one may not)."""
        index = self.route_index
        if old is None or index is None or index >= len(old):
            return False
        return (not old_is_key or self.is_key[index]) and old[index] is not UNCHANGED


@dataclass
class TransactionAssembler:
    router: Router
    emit: Callable[[Chunk], None]
    resume: Position | None = None
    chunk_events: int = 5000
    chunk_bytes: int = 4 * 1024 * 1024
    tables: dict[int, TableInfo] = field(default_factory=dict)

    _begin: pgoutput.Begin | None = None
    _lsn_text: str = ""
    _commit_ts_ms: int = 0
    _changes: int = 0  # changes of the current transaction seen so far
    _replay_until: int = 0  # changes of the current transaction already in the log
    _pending: Chunk | None = None

    def feed(self, payload: bytes) -> None:
        """Process one pgoutput message."""
        message = pgoutput.decode(payload)
        if isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
            self._change(message)
        elif isinstance(message, pgoutput.Begin):
            self._start(message)
        elif isinstance(message, pgoutput.Commit):
            self._commit(message)
        elif isinstance(message, pgoutput.Relation):
            # Sent before a relation's first change on this connection and after each
            # schema change (ALTER TABLE ... REPLICA IDENTITY included): the new
            # definition applies from here on -- also for a table added to the
            # publication while streaming, whose routability is checked here.
            table = TableInfo.build(message, self.router)
            self.tables[message.oid] = table
            if table.unroutable:
                self.router.note_unroutable(table.identity)
        elif isinstance(message, pgoutput.Truncate):
            self._truncate(message)
        # Origin, Type and logical messages carry nothing we publish.

    # -- transactions --------------------------------------------------------------------

    def _start(self, begin: pgoutput.Begin) -> None:
        if self._begin is not None:
            raise DecodeError("BEGIN inside a transaction")
        self._begin = begin
        self._lsn_text = format_lsn(begin.final_lsn)
        self._commit_ts_ms = begin.commit_ts_us // 1000
        self._changes = 0
        resume = self.resume
        if resume is None or begin.final_lsn > resume.commit_lsn:
            self._replay_until = 0
        elif begin.final_lsn == resume.commit_lsn:
            self._replay_until = resume.changes
        else:
            self._replay_until = COMPLETE
        self._pending = self._new_chunk()

    def _new_chunk(self) -> Chunk:
        assert self._begin is not None
        return Chunk([], Position(self._begin.final_lsn, 0), None, self._begin.commit_ts_us)

    def _commit(self, commit: pgoutput.Commit) -> None:
        begin, chunk = self._begin, self._pending
        if begin is None or chunk is None:
            raise DecodeError("COMMIT outside a transaction")
        chunk.position = Position(begin.final_lsn)
        chunk.end_lsn = commit.end_lsn
        chunk.replayed = self._replay_until > 0 and self._changes <= self._replay_until
        self._begin = self._pending = None
        self.emit(chunk)

    def _flush_partial(self, chunk: Chunk) -> None:
        assert self._begin is not None
        chunk.position = Position(self._begin.final_lsn, self._changes)
        self._pending = self._new_chunk()
        self.emit(chunk)

    # -- changes -------------------------------------------------------------------------

    def _table(self, oid: int) -> TableInfo:
        try:
            return self.tables[oid]
        except KeyError:
            raise DecodeError(f"change of relation {oid} before its RELATION message") from None

    def _counted(self) -> Chunk | None:
        """Count one change; the chunk to add its events to, None if already in the log."""
        chunk = self._pending
        if chunk is None:
            raise DecodeError("change outside a transaction")
        self._changes += 1
        chunk.changes += 1
        return None if self._changes <= self._replay_until else chunk

    def _change(self, message: pgoutput.Insert | pgoutput.Update | pgoutput.Delete) -> None:
        chunk = self._counted()
        if chunk is None:
            return
        table = self._table(message.relation_oid)
        new: dict[str, object] | None = None
        old: dict[str, object] | None = None
        unchanged: list[str] = []
        old_is_key = False
        if isinstance(message, pgoutput.Insert):
            op, new_values, old_values = "insert", message.new, None
            new, unchanged = table.row(message.new, False)
        elif isinstance(message, pgoutput.Update):
            op, new_values, old_values = "update", message.new, message.old
            old_is_key = message.old_is_key
            new, unchanged = table.row(message.new, False)
            if message.old is not None:
                old, _ = table.row(message.old, message.old_is_key)
                # An unchanged TOASTed value is in the full old row: fill it in.
                unchanged = [name for name in unchanged if not _copy(old, new, name)]
        else:
            op, new_values, old_values = "delete", None, message.old
            old_is_key = message.old_is_key
            old, _ = table.row(message.old, message.old_is_key)
        channels = self._channels(chunk, table, op, new_values, old_values, old_is_key)
        body: dict[str, object] = {
            "op": op,
            "schema": table.relation.schema,
            "table": table.relation.name,
            "new": new,
            "old": old,
            "lsn": self._lsn_text,
            "xid": self._xid(),
            "commit_ts_ms": self._commit_ts_ms,
        }
        if unchanged:
            body["unchanged_toast"] = unchanged
        if channels:
            chunk.routed += 1
        else:
            chunk.skipped += 1
        for channel in channels:
            self._add(chunk, channel, body)
        self._maybe_flush(chunk)

    def _channels(
        self,
        chunk: Chunk,
        table: TableInfo,
        op: str,
        new_values: list[pgoutput.Value] | None,
        old_values: list[pgoutput.Value] | None,
        old_is_key: bool,
    ) -> list[str]:
        """The channels of one row change: an update that moves the row has two."""
        if table.channel is not None:
            return [table.channel]
        route = self.router.channel_for
        if op == "insert" or table.route_index is None:
            # No routing column at all: every change goes to the default channel or
            # is skipped alike (rules 3 and 4), so no delete is singled out.
            return _present(route(table.qualified, table.route_value(new_values)))
        if table.old_has_route(old_values, old_is_key):
            old_route = table.route_value(old_values)
            old_channel = route(table.qualified, old_route)
            if op == "delete":
                return _present(old_channel)
            assert new_values is not None  # an update
            new_route = table.route_value(new_values)
            if new_route is None and table.route_unchanged(new_values):
                new_route = old_route  # an unchanged TOASTed value: it did not move
            new_channel = route(table.qualified, new_route)
            if old_channel is None or old_channel == new_channel:
                return _present(new_channel)
            # The row moved: the old channel sees it leave, then the new one arrive.
            return [old_channel] if new_channel is None else [old_channel, new_channel]
        if old_values is None and table.identity.route_in_identity:
            # An update that left the identity columns alone: the routing column,
            # one of them, is unchanged, so old and new channel are the same.
            return _present(route(table.qualified, table.route_value(new_values)))
        # The old row lacks the routing column: where the row was is unknown.
        if self.router.unroutable == REFUSE:
            raise self._refusal(table, op)
        chunk.unroutable += 1
        if op == "delete":
            return _present(self.router.unknown_old_channel())
        return _present(route(table.qualified, table.route_value(new_values)))

    def _refusal(self, table: TableInfo, op: str) -> UnroutableChange:
        problem = table.identity.problem(self.router.route_column)
        return UnroutableChange(
            f"{problem}. Streaming stopped at its {op.upper()} in the transaction that "
            f"committed at {self._lsn_text} (xid {self._xid()}): a change written before "
            "the fix has no old channel whatever the fix, so pass it by restarting with "
            "--pg-unroutable default-channel or skip (see docs/postgres.md)",
            self._begin.final_lsn if self._begin is not None else 0,
        )

    def _truncate(self, message: pgoutput.Truncate) -> None:
        chunk = self._counted()
        if chunk is None:
            return
        routed = False
        for oid in message.relation_oids:
            table = self._table(oid)
            channel = self.router.truncate_channel(table.qualified)
            if channel is None:
                continue
            routed = True
            body: dict[str, object] = {
                "op": "truncate",
                "schema": table.relation.schema,
                "table": table.relation.name,
                "new": None,
                "old": None,
                "lsn": self._lsn_text,
                "xid": self._xid(),
                "commit_ts_ms": self._commit_ts_ms,
            }
            self._add(chunk, channel, body)
        if routed:
            chunk.routed += 1
        else:
            chunk.skipped += 1
        self._maybe_flush(chunk)

    def _xid(self) -> int:
        assert self._begin is not None
        return self._begin.xid

    def _add(self, chunk: Chunk, channel: str, body: dict[str, object]) -> None:
        # orjson leaves its ~4 KiB output buffer under each result; a copy of the exact
        # size (~0.15 µs) is what keeps queued and cached payloads at their real size.
        payload = bytes(memoryview(orjson.dumps(body)))
        chunk.events.append(NewEvent(channel, payload))
        chunk.nbytes += len(payload) + len(channel)

    def _maybe_flush(self, chunk: Chunk) -> None:
        if len(chunk.events) >= self.chunk_events or chunk.nbytes >= self.chunk_bytes:
            self._flush_partial(chunk)


def _present(channel: str | None) -> list[str]:
    return [] if channel is None else [channel]


def _copy(source: dict[str, object], target: dict[str, object], name: str) -> bool:
    if name in source:
        target[name] = source[name]
        return True
    return False
