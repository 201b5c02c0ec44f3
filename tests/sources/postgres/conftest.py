"""Fixtures for the PostgreSQL source: one throwaway cluster per session, a database per test."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2.extensions
import pytest

from athena_cdc.config import Settings
from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import MemoryLog
from athena_cdc.sources.postgres import PostgresSource
from tests.pg_cluster import ClusterSetupError, PgCluster, pg_cluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    try:
        with pg_cluster() as cluster:
            yield cluster
    except ClusterSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Db:
    """A fresh database of the session cluster, with its own slot name."""

    cluster: PgCluster
    name: str
    slot: str
    sources: list[PostgresSource] = field(default_factory=list)
    _conn: psycopg2.extensions.connection | None = None

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def settings(self, **overrides: Any) -> Settings:
        return Settings(pg_slot=self.slot, **overrides)

    def source(self, log: EventLog, settings: Settings | None = None,
               **kw: Any) -> PostgresSource:
        source = PostgresSource(self.dsn, settings or self.settings(), log, **kw)
        self.sources.append(source)
        return source

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        if self._conn is not None:
            try:  # the server may have been restarted by the test
                self._conn.cursor().execute("SELECT 1")
            except psycopg2.OperationalError:
                self._conn.close()
        if self._conn is None or self._conn.closed:
            self._conn = self.cluster.connect(self.name)
        with self._conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []


@pytest.fixture
async def db(pg: PgCluster) -> AsyncIterator[Db]:
    n = next(_names)
    name = f"t{n}"
    pg.execute(f"CREATE DATABASE {name}")
    database = Db(pg, name, f"slot_{n}")
    try:
        yield database
    finally:
        for source in database.sources:
            await source.stop()
        if database._conn is not None:
            database._conn.close()
        # A forgotten slot would pin WAL for the rest of the session.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pg.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           "WHERE slot_name = %s", database.slot)
                break
            except psycopg2.Error:
                await asyncio.sleep(0.1)
        pg.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def memlog() -> AsyncIterator[MemoryLog]:
    log = MemoryLog(retention_events=1_000_000)
    await log.open()
    yield log
    await log.close()


async def eventually(check: Callable[[], bool | Awaitable[bool]], wait: float = 30.0,
                     what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def read(log: EventLog, channel: str) -> list[tuple[int, dict[str, Any]]]:
    """(seq, payload) of every event of ``channel``, oldest first."""
    events = await log.read_channel(channel, None, None, 10_000_000, newest=False)
    return [(e.seq, orjson.loads(e.message)["data"]["payload"]) for e in events]


async def count(log: EventLog, channel: str) -> int:
    return log.bounds(channel).last_seq
