"""pgoutput decoding, message by message, from bytes built as PostgreSQL sends them."""

from __future__ import annotations

import pytest

from athena_cdc.sources.postgres import pgoutput
from athena_cdc.sources.postgres.errors import DecodeError

from .pgoutput_messages import (
    begin,
    commit,
    delete,
    insert,
    logical_message,
    origin,
    relation,
    truncate,
    type_message,
    update,
)

TS = 1_700_000_000_123_456  # µs since the Unix epoch


def test_begin_and_commit() -> None:
    assert pgoutput.decode(begin(0x16B3748, TS, 731)) == pgoutput.Begin(0x16B3748, TS, 731)
    assert pgoutput.decode(commit(0x16B3748, 0x16B3780, TS)) == pgoutput.Commit(
        0, 0x16B3748, 0x16B3780, TS
    )


def test_origin_and_type() -> None:
    assert pgoutput.decode(origin(5, "node_a")) == pgoutput.Origin(5, "node_a")
    assert pgoutput.decode(type_message(16500, "public", "mood")) == pgoutput.Type(
        16500, "public", "mood"
    )


def test_relation() -> None:
    msg = pgoutput.decode(
        relation(16390, "public", "orders", [("id", 23, True), ("note", 25, False)], "f")
    )
    assert msg == pgoutput.Relation(
        16390, "public", "orders", "f",
        (pgoutput.Column("id", 23, -1, True), pgoutput.Column("note", 25, -1, False)),
    )


def test_relation_empty_namespace_is_pg_catalog() -> None:
    msg = pgoutput.decode(relation(1, "", "t", []))
    assert isinstance(msg, pgoutput.Relation) and msg.schema == "pg_catalog"


def test_insert_with_null_and_text() -> None:
    msg = pgoutput.decode(insert(7, [b"1", None, b"h\xc3\xa9"]))
    assert msg == pgoutput.Insert(7, [b"1", None, b"h\xc3\xa9"])


def test_update_forms() -> None:
    plain = pgoutput.decode(update(7, [b"1", "u"]))
    assert plain == pgoutput.Update(7, None, False, [b"1", pgoutput.UNCHANGED])
    assert isinstance(plain, pgoutput.Update) and plain.new[1] is pgoutput.UNCHANGED
    keyed = pgoutput.decode(update(7, [b"2", b"x"], [b"1", None], b"K"))
    assert keyed == pgoutput.Update(7, [b"1", None], True, [b"2", b"x"])
    full = pgoutput.decode(update(7, [b"1", b"y"], [b"1", b"x"], b"O"))
    assert full == pgoutput.Update(7, [b"1", b"x"], False, [b"1", b"y"])


def test_delete_forms() -> None:
    assert pgoutput.decode(delete(7, [b"1", None])) == pgoutput.Delete(7, [b"1", None], True)
    assert pgoutput.decode(delete(7, [b"1", b"x"], b"O")) == pgoutput.Delete(
        7, [b"1", b"x"], False
    )


def test_truncate() -> None:
    assert pgoutput.decode(truncate([7, 8], cascade=True, restart_identity=True)) == (
        pgoutput.Truncate((7, 8), True, True)
    )


def test_logical_message() -> None:
    assert pgoutput.decode(logical_message("app", b"hi")) == pgoutput.LogicalMessage(
        True, 0x10, "app", b"hi"
    )


@pytest.mark.parametrize(
    "payload",
    [b"", b"Z", b"B\x00", insert(7, [b"1"])[:-1], b"I\x00\x00\x00\x07X", b"D\x00\x00\x00\x07N"],
)
def test_malformed_messages_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        pgoutput.decode(payload)
