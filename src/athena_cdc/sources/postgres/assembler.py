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
from athena_cdc.sources.postgres.errors import DecodeError
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

    @classmethod
    def build(cls, relation: pgoutput.Relation, router: Router) -> TableInfo:
        names = [c.name for c in relation.columns]
        qualified = f"{relation.schema}.{relation.name}"
        route = router.route_column
        return cls(
            relation,
            qualified,
            names,
            [converter_for(c.type_oid) for c in relation.columns],
            [c.is_key for c in relation.columns],
            names.index(route) if route in names else None,
            router.table_channel(qualified),
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
            # schema change: the new definition applies from here on.
            self.tables[message.oid] = TableInfo.build(message, self.router)
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
        if isinstance(message, pgoutput.Insert):
            op, new_values, old_values = "insert", message.new, None
            new, unchanged = table.row(message.new, False)
        elif isinstance(message, pgoutput.Update):
            op, new_values, old_values = "update", message.new, message.old
            new, unchanged = table.row(message.new, False)
            if message.old is not None:
                old, _ = table.row(message.old, message.old_is_key)
                # An unchanged TOASTed value is in the full old row: fill it in.
                unchanged = [name for name in unchanged if not _copy(old, new, name)]
        else:
            op, new_values, old_values = "delete", None, message.old
            old, _ = table.row(message.old, message.old_is_key)
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
        channels = self._channels(table, new_values, old_values)
        if channels:
            chunk.routed += 1
        else:
            chunk.skipped += 1
        for channel in channels:
            self._add(chunk, channel, body)
        self._maybe_flush(chunk)

    def _channels(
        self,
        table: TableInfo,
        new_values: list[pgoutput.Value] | None,
        old_values: list[pgoutput.Value] | None,
    ) -> list[str]:
        if table.channel is not None:
            return [table.channel]
        new_route = table.route_value(new_values)
        old_route = table.route_value(old_values)
        channel = self.router.channel_for(table.qualified, new_route or old_route)
        if channel is None:
            return []
        if new_route and old_route and old_route != new_route:
            # The row moved to another channel: the old channel sees it leave too.
            previous = self.router.channel_for(table.qualified, old_route)
            if previous is not None and previous != channel:
                return [previous, channel]
        return [channel]

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


def _copy(source: dict[str, object], target: dict[str, object], name: str) -> bool:
    if name in source:
        target[name] = source[name]
        return True
    return False
