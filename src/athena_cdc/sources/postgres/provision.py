"""Checking PostgreSQL and creating the publication and the slot, before streaming.

Everything here runs over an ordinary (non-replication) connection in a worker
thread. Problems that only an operator can fix become a :class:`SourceConfigError`
whose message says what to change; problems that may go away by themselves (server
down) become :class:`SourceUnavailable` and are retried. A slot streamed by another
connection is not a problem here: who streams it is decided by the leader lock
(:mod:`.leader`) and START_REPLICATION (:class:`SlotBusy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from athena_cdc.sources.postgres.errors import (
    SlotBusy,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
)
from athena_cdc.sources.postgres.values import SESSION_SETTINGS

log = logging.getLogger(__name__)

# libpq settings added to a DSN unless it sets them itself: a name in
# pg_stat_activity, and TCP keepalives so that a vanished server (no RST) is noticed
# within ~25 s instead of the kernel's two hours.
CONNECTION_DEFAULTS = {
    "application_name": "athena-cdc",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

# Connection errors (no SQLSTATE on a failed connect) that retrying will not fix.
_FATAL_CONNECT = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "must be superuser or replication role",
    "permission denied",
    "exceeds max_wal_senders",
    "sorry, too many clients",
)


def describe(dsn: str) -> str:
    """``host:port/db`` of a DSN, without credentials (for messages and metrics)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port', '5432')}/{params.get('dbname', params.get('user', ''))}"


def session_dsn(dsn: str) -> str:
    """``dsn`` plus :data:`CONNECTION_DEFAULTS` and the value-format settings."""
    params = psycopg2.extensions.parse_dsn(dsn)
    for key, value in CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    pinned = " ".join(f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items())
    params["options"] = (params.get("options", "") + " " + pinned).strip()
    return str(psycopg2.extensions.make_dsn(**params))


def connect(dsn: str, **kwargs: object) -> psycopg2.extensions.connection:
    """Connect, turning failures into :class:`SourceConfigError`/:class:`SourceUnavailable`."""
    try:
        return psycopg2.connect(session_dsn(dsn), **kwargs)
    except psycopg2.Error as exc:
        raise classify(exc, dsn) from None


def classify(exc: BaseException, dsn: str) -> SourceError:
    """A psycopg2 error → the source's error, with a message saying what to do."""
    if isinstance(exc, SourceError):
        return exc
    where = f"PostgreSQL {describe(dsn)}"
    message = " ".join(str(exc).split())
    code = getattr(exc, "pgcode", None)
    if code == "55006" or "is active for PID" in message:
        return SlotBusy(f"{where}: {message}")
    if code == "42501" or "must be superuser or replication role" in message:
        return SourceConfigError(
            f"{where}: {message}; give the role the REPLICATION attribute "
            "(ALTER ROLE <user> REPLICATION) or connect as a role that has it"
        )
    if "exceeds max_wal_senders" in message:
        return SourceConfigError(f"{where}: {message}; raise max_wal_senders and restart it")
    if code is None and any(text in message for text in _FATAL_CONNECT):
        return SourceConfigError(f"{where}: {message}")
    return SourceUnavailable(f"{where}: {message}")


@dataclass(frozen=True)
class Target:
    """What to stream: slot, publication, and the tables of a new publication."""

    slot: str
    publication: str
    tables: tuple[str, ...] = ()


def provision(
    dsn: str,
    target: Target,
    check_tables: Callable[[psycopg2.extensions.cursor], None] | None = None,
) -> None:
    """Check the server, create what is missing; raise :class:`SourceError` if it cannot work.

    ``check_tables`` looks at the publication's tables before
    the slot is created, so a refusal does not leave a new slot holding WAL.
    """
    where = f"PostgreSQL {describe(dsn)}"
    conn = connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            _check_server(cur, where)
            _ensure_publication(cur, where, target)
            if check_tables is not None:
                check_tables(cur)
            _ensure_slot(cur, where, target.slot)
    except psycopg2.Error as exc:
        raise classify(exc, dsn) from None
    finally:
        conn.close()


def _check_server(cur: psycopg2.extensions.cursor, where: str) -> None:
    cur.execute(
        "SELECT current_setting('server_version_num')::int, "
        "current_setting('wal_level'), current_user, "
        "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
    )
    version, wal_level, user, may_replicate = cur.fetchone()
    if version < 100000:
        raise SourceConfigError(f"{where}: PostgreSQL 10 or later is needed (pgoutput)")
    if wal_level != "logical":
        raise SourceConfigError(
            f"{where}: wal_level is {wal_level!r}; set wal_level = logical in "
            "postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
        )
    if not may_replicate:
        raise SourceConfigError(
            f"{where}: role {user!r} lacks the REPLICATION attribute; run "
            f"ALTER ROLE {quote_ident(user)} REPLICATION as a superuser"
        )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_identifier(name: str) -> sql.Identifier:
    schema, dot, table = name.partition(".")
    return sql.Identifier(schema, table) if dot else sql.Identifier(name)


def _ensure_publication(cur: psycopg2.extensions.cursor, where: str, target: Target) -> None:
    cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (target.publication,))
    if cur.fetchone():
        return
    if target.tables:
        statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(target.publication),
            sql.SQL(", ").join(_table_identifier(t) for t in target.tables),
        )
    else:
        statement = sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(
            sql.Identifier(target.publication)
        )
    try:
        cur.execute(statement)
    except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
        # Created concurrently by another node or worker (the loser of that race gets a
        # unique violation on pg_publication's name index): fine.
        return
    except psycopg2.Error as exc:
        text = statement.as_string(cur.connection)
        raise SourceConfigError(
            f"{where}: cannot create publication {target.publication!r}: "
            f"{' '.join(str(exc).split())}; create it as a superuser: {text}"
        ) from None
    log.info("postgres %s: created publication %s", where, target.publication)


def _ensure_slot(cur: psycopg2.extensions.cursor, where: str, slot: str) -> None:
    cur.execute(
        "SELECT plugin, slot_type, database FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    row = cur.fetchone()
    if row is None:
        _create_slot(cur, where, slot)
        return
    plugin, slot_type, database = row
    if slot_type != "logical" or plugin != "pgoutput":
        raise SourceConfigError(
            f"{where}: slot {slot!r} exists but is a {slot_type} slot of plugin "
            f"{plugin!r}, not pgoutput; drop it or choose another --pg-slot"
        )
    cur.execute("SELECT current_database()")
    (current,) = cur.fetchone()
    if database != current:
        raise SourceConfigError(
            f"{where}: slot {slot!r} belongs to database {database!r}, not {current!r}; "
            "connect to that database or choose another --pg-slot"
        )


def _create_slot(cur: psycopg2.extensions.cursor, where: str, slot: str) -> None:
    try:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except psycopg2.errors.DuplicateObject:
        return
    except psycopg2.errors.ConfigurationLimitExceeded as exc:
        raise SourceConfigError(
            f"{where}: cannot create slot {slot!r}: {' '.join(str(exc).split())}; "
            "raise max_replication_slots (and restart) or drop an unused slot"
        ) from None
    log.info("postgres %s: created logical replication slot %s (pgoutput)", where, slot)
