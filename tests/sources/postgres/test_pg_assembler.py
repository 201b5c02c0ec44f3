"""Transactions → chunks: payload shape, routing, chunking, and resuming mid-transaction."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from athena_cdc.sources.postgres.assembler import Chunk, TransactionAssembler
from athena_cdc.sources.postgres.errors import DecodeError, UnroutableChange
from athena_cdc.sources.postgres.lsn import Position
from athena_cdc.sources.postgres.routing import Router

from .pgoutput_messages import begin, commit, delete, insert, relation, truncate, update

TS = 1_700_000_000_123_456
ORDERS = relation(16390, "public", "orders",
                  [("id", 23, True), ("organization_id", 25, False), ("body", 25, False)])
AUDIT = relation(16391, "public", "audit", [("id", 23, True), ("what", 25, False)])


def run(messages: list[bytes], router: Router | None = None, **kw: Any) -> list[Chunk]:
    chunks: list[Chunk] = []
    assembler = TransactionAssembler(router or Router("organization_id"), chunks.append, **kw)
    for message in messages:
        assembler.feed(message)
    return chunks


def payloads(chunks: list[Chunk]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.channel, orjson.loads(e.payload)) for c in chunks for e in c.events]


def txn(lsn: int, *changes: bytes, xid: int = 700) -> list[bytes]:
    return [begin(lsn, TS, xid), *changes, commit(lsn, lsn + 0x30, TS)]


def test_insert_payload() -> None:
    chunks = run([ORDERS, *txn(0x16B3748, insert(16390, [b"1", b"acme", b"hello"]))])
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.position == Position(0x16B3748) and chunk.end_lsn == 0x16B3748 + 0x30
    assert payloads(chunks) == [("acme", {
        "op": "insert", "schema": "public", "table": "orders",
        "new": {"id": 1, "organization_id": "acme", "body": "hello"}, "old": None,
        "lsn": "0/16B3748", "xid": 700, "commit_ts_ms": TS // 1000,
    })]
    assert (chunk.routed, chunk.skipped) == (1, 0)


def test_update_key_only_old_and_unchanged_toast() -> None:
    msgs = [ORDERS, *txn(0x100, update(16390, [b"2", b"acme", "u"], [b"1", None, None], b"K"))]
    [(channel, body)] = payloads(run(msgs, Router("organization_id", unroutable="skip")))
    assert channel == "acme"
    assert body["old"] == {"id": 1}  # key columns only
    assert body["new"] == {"id": 2, "organization_id": "acme"}  # TOASTed body left out
    assert body["unchanged_toast"] == ["body"]


def test_update_full_old_fills_unchanged_toast() -> None:
    msgs = [ORDERS, *txn(0x100, update(16390, [b"1", b"acme", "u"],
                                      [b"1", b"acme", b"long"], b"O"))]
    [(_, body)] = payloads(run(msgs))
    assert body["new"]["body"] == "long" and "unchanged_toast" not in body


def test_row_moving_to_another_channel_is_sent_to_both() -> None:
    msgs = [ORDERS, *txn(0x100, update(16390, [b"1", b"beta", b"x"],
                                      [b"1", b"acme", b"x"], b"O"))]
    assert [channel for channel, _ in payloads(run(msgs))] == ["acme", "beta"]


# organization_id is part of the key (default replica identity).
ROUTED_KEY = relation(16392, "public", "lines",
                      [("organization_id", 25, True), ("id", 23, True), ("qty", 23, False)])
FULL = relation(16390, "public", "orders",
                [("id", 23, True), ("organization_id", 25, True), ("body", 25, True)], "f")


def test_row_moving_is_the_same_update_event_on_both_channels_old_first() -> None:
    msgs = [FULL, *txn(0x100, update(16390, [b"1", b"beta", b"x"], [b"1", b"acme", b"x"], b"O"))]
    chunk = run(msgs)[0]
    (old_channel, left), (new_channel, arrived) = payloads([chunk])
    assert (old_channel, new_channel) == ("acme", "beta")
    assert left == arrived and left["op"] == "update"
    assert left["old"]["organization_id"] == "acme" and left["new"]["organization_id"] == "beta"
    assert (chunk.routed, chunk.unroutable) == (1, 0)


def test_routing_column_in_the_key() -> None:
    same = update(16392, [b"acme", b"1", b"5"], None, b"")  # key unchanged: no old row
    moved = update(16392, [b"beta", b"1", b"5"], [b"acme", b"1", None], b"K")
    gone = delete(16392, [b"beta", b"1", None], b"K")
    channels = [c for c, _ in payloads(run([ROUTED_KEY, *txn(0x100, same, moved, gone)]))]
    assert channels == ["acme", "acme", "beta", "beta"]


def test_unknown_old_channel_is_refused_by_default() -> None:
    no_old = update(16390, [b"1", b"acme", b"x"], None, b"")
    for change in (delete(16390, [b"1", None, None], b"K"), no_old):
        with pytest.raises(UnroutableChange) as caught:
            run([ORDERS, *txn(0x1A2B3C8, insert(16390, [b"1", b"acme", b"x"]), change)])
        message = str(caught.value)
        assert "\n" not in message and "table public.orders" in message
        assert "ALTER TABLE public.orders REPLICA IDENTITY FULL;" in message
        assert "0/1A2B3C8" in message and caught.value.commit_lsn == 0x1A2B3C8


def test_unknown_old_channel_fallbacks() -> None:
    changes = txn(0x100, update(16390, [b"1", b"acme", b"x"], None, b""),
                  delete(16390, [b"1", None, None], b"K"))
    skipped = run([ORDERS, *changes], Router("organization_id", "misc", unroutable="skip"))[0]
    assert [c for c, _ in payloads([skipped])] == ["acme"]  # the update: new channel only
    assert (skipped.routed, skipped.skipped, skipped.unroutable) == (1, 1, 2)
    router = Router("organization_id", "misc", unroutable="default-channel")
    assert [c for c, _ in payloads(run([ORDERS, *changes], router))] == ["acme", "misc"]
    # A table override routes without the column: nothing is unknown.
    router = Router("organization_id", table_channels={"public.orders": "orders"})
    assert [c for c, _ in payloads(run([ORDERS, *changes], router))] == ["orders", "orders"]


def test_delete_routes_by_old_row() -> None:
    msgs = [ORDERS, *txn(0x100, delete(16390, [b"1", b"acme", b"x"], b"O"))]
    [(channel, body)] = payloads(run(msgs))
    assert channel == "acme" and body["op"] == "delete" and body["new"] is None


def test_skipped_default_and_override() -> None:
    msgs = [ORDERS, AUDIT, *txn(0x100, insert(16390, [b"1", None, b"x"]),
                                insert(16391, [b"1", b"login"]))]
    chunk = run(msgs)[0]
    assert (chunk.routed, chunk.skipped, len(chunk.events)) == (0, 2, 0)
    chunks = run(msgs, Router("organization_id", "misc", {"public.audit": "audit"}))
    assert [c for c, _ in payloads(chunks)] == ["misc", "audit"]


def test_invalid_channel_value_is_not_used() -> None:
    msgs = [ORDERS, *txn(0x100, insert(16390, [b"1", b"bad\x01name", b"x"]))]
    assert run(msgs)[0].skipped == 1


def test_truncate_goes_to_override_or_default() -> None:
    msgs = [ORDERS, AUDIT, *txn(0x100, truncate([16390, 16391]))]
    assert run(msgs)[0].skipped == 1
    chunks = run(msgs, Router("organization_id", "misc", {"public.audit": "audit"}))
    got = [(c, b["table"], b["op"]) for c, b in payloads(chunks)]
    assert got == [("misc", "orders", "truncate"), ("audit", "audit", "truncate")]


def big_txn(lsn: int, rows: int) -> list[bytes]:
    return txn(lsn, *(insert(16390, [str(i).encode(), b"acme", b"x"]) for i in range(rows)))


def test_large_transaction_is_chunked_with_partial_positions() -> None:
    chunks = run([ORDERS, *big_txn(0x100, 25)], chunk_events=10)
    assert [len(c.events) for c in chunks] == [10, 10, 5]
    assert [str(c.position) for c in chunks] == ["0/100#10", "0/100#20", "0/100"]
    assert [c.end_lsn for c in chunks] == [None, None, 0x130]


def test_resume_skips_applied_transactions_and_prefix() -> None:
    messages = [ORDERS, *big_txn(0x100, 3), *big_txn(0x200, 25), *big_txn(0x300, 2)]
    chunks = run(messages, resume=Position(0x200, 20), chunk_events=10)
    assert chunks[0].events == [] and chunks[0].replayed and chunks[0].end_lsn == 0x130
    ids = [body["new"]["id"] for _, body in payloads(chunks)]
    assert ids == [20, 21, 22, 23, 24, 0, 1]
    assert run(messages, resume=Position(0x300))[-1].replayed


def test_change_before_relation_is_an_error() -> None:
    with pytest.raises(DecodeError):
        run(txn(0x100, insert(99, [b"1"])))
