"""Exactly one reader of a slot across processes and nodes: a PostgreSQL advisory lock.

Every athena-cdc process configured with the same ``--source`` tries
``pg_try_advisory_lock(lock_key(slot))`` on its *replication connection itself*, before
START_REPLICATION. The lock is a session lock of that backend, so it is released the
moment the connection ends -- a killed process, a dropped network link or a
``wal_sender_timeout`` all end leadership without a lease to expire. Through a
transaction-mode pooler the lock would belong to whichever server connection ran the
query, so the DSN must reach PostgreSQL directly (a replication connection cannot go
through PgBouncer anyway).

Advisory locks are per database, and a slot belongs to one database (provisioning
checks that), so every process that can stream the slot competes for the same lock.
"""

from __future__ import annotations

import hashlib

import psycopg2.extensions

# Why the key mixes in a fixed prefix: other applications' advisory locks in the same
# database are unlikely to collide with a hash of ours.
_KEY_PREFIX = b"athena-cdc replication slot leader\0"


def lock_key(slot: str) -> int:
    """The advisory lock key (a signed 64-bit int) of ``slot``: the same in every process."""
    digest = hashlib.blake2b(_KEY_PREFIX + slot.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_lead(cur: psycopg2.extensions.cursor, slot: str) -> bool:
    """Take the slot's leader lock on ``cur``'s connection if it is free; never waits."""
    cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(slot),))
    row = cur.fetchone()
    return bool(row and row[0])
