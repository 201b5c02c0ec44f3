"""A pure decoder of PostgreSQL's ``pgoutput`` logical replication messages.

Protocol version 1, as documented in "Logical Replication Message Formats" of the
PostgreSQL manual. No I/O: :func:`decode` turns the payload of one ``XLogData``
message into one of the dataclasses below. Column values stay in their text form
(``bytes``); :mod:`.values` types them, because only the relation knows the types.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from athena_cdc.sources.postgres.errors import DecodeError

# Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
PG_EPOCH_US = 946_684_800_000_000

# One column of a tuple: ``None`` for SQL NULL, :data:`UNCHANGED` for an unchanged
# TOASTed value the server did not send, else the value's text form.
UNCHANGED = b"\x00unchanged-toast"  # a sentinel no text value can be (no NUL in text)
Value = bytes | None

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_COLUMN_TAIL = struct.Struct(">Ii")
_TRUNCATE_HEAD = struct.Struct(">IB")


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: the transaction's identity and order
    commit_ts_us: int  # microseconds since the Unix epoch
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: what to confirm to the server
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    schema: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old: list[Value] | None  # None unless the key changed or REPLICA IDENTITY FULL
    old_is_key: bool  # True: ``old`` holds key columns only (the others are None)
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: list[Value]
    old_is_key: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``pg_logical_emit_message`` output (sent only when asked for; ignored)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
)


def decode(buf: bytes) -> Message:
    """Decode one pgoutput message, or raise :class:`DecodeError`."""
    if not buf:
        raise DecodeError("empty pgoutput message")
    kind = buf[0]
    try:
        decoder = _DECODERS[kind]
    except KeyError:
        raise DecodeError(f"unknown pgoutput message type {chr(kind)!r}") from None
    try:
        return decoder(buf)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"malformed pgoutput {chr(kind)!r} message: {exc}") from None


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, ts + PG_EPOCH_US, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, ts + PG_EPOCH_US)


def _origin(buf: bytes) -> Origin:
    (lsn,) = struct.unpack_from(">Q", buf, 1)
    name, _ = _cstring(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (oid,) = _U32.unpack_from(buf, 1)
    schema, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (ncols,) = _U16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        column_name, pos = _cstring(buf, pos + 1)
        type_oid, modifier = _COLUMN_TAIL.unpack_from(buf, pos)
        pos += 8
        columns.append(Column(column_name, type_oid, modifier, bool(flags & 1)))
    # An empty namespace stands for pg_catalog.
    return Relation(oid, schema or "pg_catalog", name, identity, tuple(columns))


def _type(buf: bytes) -> Type:
    (oid,) = _U32.unpack_from(buf, 1)
    schema, pos = _cstring(buf, 5)
    name, _ = _cstring(buf, pos)
    return Type(oid, schema or "pg_catalog", name)


def _tuple(buf: bytes, pos: int) -> tuple[list[Value], int]:
    (ncols,) = _U16.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(ncols):
        kind = buf[pos]
        if kind == 0x74 or kind == 0x62:  # 't' text ('b' binary is never asked for)
            (length,) = _I32.unpack_from(buf, pos + 1)
            start = pos + 5
            pos = start + length
            if pos > len(buf):
                raise DecodeError("tuple value runs past the end of the message")
            append(buf[start:pos])
        elif kind == 0x6E:  # 'n' NULL
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u' unchanged TOASTed value, not sent
            append(UNCHANGED)
            pos += 1
        else:
            raise DecodeError(f"unknown tuple column kind {chr(kind)!r}")
    return values, pos


def _insert(buf: bytes) -> Insert:
    (oid,) = _U32.unpack_from(buf, 1)
    if buf[5] != 0x4E:  # 'N'
        raise DecodeError("insert without a new tuple")
    new, _ = _tuple(buf, 6)
    return Insert(oid, new)


def _update(buf: bytes) -> Update:
    (oid,) = _U32.unpack_from(buf, 1)
    pos = 5
    old: list[Value] | None = None
    old_is_key = False
    if buf[pos] in (0x4B, 0x4F):  # 'K' key or 'O' full old tuple
        old_is_key = buf[pos] == 0x4B
        old, pos = _tuple(buf, pos + 1)
    if buf[pos] != 0x4E:
        raise DecodeError("update without a new tuple")
    new, _ = _tuple(buf, pos + 1)
    return Update(oid, old, old_is_key, new)


def _delete(buf: bytes) -> Delete:
    (oid,) = _U32.unpack_from(buf, 1)
    if buf[5] not in (0x4B, 0x4F):
        raise DecodeError("delete without an old tuple")
    old, _ = _tuple(buf, 6)
    return Delete(oid, old, buf[5] == 0x4B)


def _truncate(buf: bytes) -> Truncate:
    count, options = _TRUNCATE_HEAD.unpack_from(buf, 1)
    oids = struct.unpack_from(f">{count}I", buf, 6)
    return Truncate(tuple(oids), bool(options & 1), bool(options & 2))


def _message(buf: bytes) -> LogicalMessage:
    flags = buf[1]
    (lsn,) = struct.unpack_from(">Q", buf, 2)
    prefix, pos = _cstring(buf, 10)
    (length,) = _U32.unpack_from(buf, pos)
    return LogicalMessage(bool(flags & 1), lsn, prefix, buf[pos + 4 : pos + 4 + length])


_DECODERS: dict[int, Callable[[bytes], Message]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}
