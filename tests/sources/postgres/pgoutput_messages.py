"""Build pgoutput protocol-1 messages byte by byte, as PostgreSQL sends them (for tests)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from athena_cdc.sources.postgres.pgoutput import PG_EPOCH_US

Cell = bytes | None | str  # bytes: text value; None: NULL; "u": unchanged TOAST


def cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


def begin(final_lsn: int, commit_ts_us: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, commit_ts_us - PG_EPOCH_US, xid)


def commit(commit_lsn: int, end_lsn: int, commit_ts_us: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, commit_ts_us - PG_EPOCH_US)


def origin(lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", lsn) + cstring(name)


def relation(oid: int, schema: str, name: str,
             columns: Sequence[tuple[str, int, bool]], identity: str = "d") -> bytes:
    """``columns``: (name, type oid, is key)."""
    out = b"R" + struct.pack(">I", oid) + cstring(schema) + cstring(name)
    out += identity.encode() + struct.pack(">H", len(columns))
    for column, type_oid, is_key in columns:
        out += bytes([1 if is_key else 0]) + cstring(column) + struct.pack(">Ii", type_oid, -1)
    return out


def type_message(oid: int, schema: str, name: str) -> bytes:
    return b"Y" + struct.pack(">I", oid) + cstring(schema) + cstring(name)


def tuple_data(cells: Sequence[Cell]) -> bytes:
    out = struct.pack(">H", len(cells))
    for cell in cells:
        if cell is None:
            out += b"n"
        elif cell == "u":
            out += b"u"
        else:
            assert isinstance(cell, bytes)
            out += b"t" + struct.pack(">i", len(cell)) + cell
    return out


def insert(oid: int, new: Sequence[Cell]) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tuple_data(new)


def update(oid: int, new: Sequence[Cell], old: Sequence[Cell] | None = None,
           old_kind: bytes = b"O") -> bytes:
    out = b"U" + struct.pack(">I", oid)
    if old is not None:
        out += old_kind + tuple_data(old)
    return out + b"N" + tuple_data(new)


def delete(oid: int, old: Sequence[Cell], old_kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack(">I", oid) + old_kind + tuple_data(old)


def truncate(oids: Sequence[int], cascade: bool = False, restart_identity: bool = False) -> bytes:
    options = (1 if cascade else 0) | (2 if restart_identity else 0)
    return b"T" + struct.pack(">IB", len(oids), options) + struct.pack(f">{len(oids)}I", *oids)


def logical_message(prefix: str, content: bytes, transactional: bool = True) -> bytes:
    return (b"M" + bytes([1 if transactional else 0]) + struct.pack(">Q", 0x10)
            + cstring(prefix) + struct.pack(">I", len(content)) + content)
