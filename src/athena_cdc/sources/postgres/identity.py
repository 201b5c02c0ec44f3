"""Can a table's DELETEs and UPDATEs be routed? Its replica identity against the route column.

A DELETE carries only the old row's *replica identity* columns, and an UPDATE carries
the old row only when the identity is FULL or the key changed. A row's channel is
its route column (``organization_id``), so when that column is not part of the
identity, the channel a DELETE belongs to -- and the channel an UPDATE moves a row
away from -- is unknown. Such a table is *unroutable*:

* ``relreplident`` ``d`` (default): the identity is the primary key;
* ``i`` (``REPLICA IDENTITY USING INDEX``): that index's columns;
* ``f`` (``FULL``): the whole row, always routable;
* ``n`` (nothing), or ``d`` without a primary key: no identity at all, and
  PostgreSQL itself refuses UPDATE and DELETE on a table that publishes them, so
  nothing can be lost.

A table with a per-table channel override, or without the route column at all
(every change goes to the default channel or is skipped, inserts included), is not
affected. Checked twice: in the catalog at start (:func:`check_publication`), and
from each pgoutput RELATION message while streaming (:func:`from_relation`) -- that
message describes the table *as of the changes that follow it*, which is what
decides what their old rows hold, even when the catalog has changed since.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg2.extensions

from athena_cdc.sources.postgres import pgoutput

# --pg-unroutable: what to do with a change whose old channel is unknown.
REFUSE = "refuse"
DEFAULT_CHANNEL = "default-channel"
SKIP = "skip"


@dataclass(frozen=True)
class TableIdentity:
    """What the old row of a table's UPDATE/DELETE holds, as far as routing goes."""

    qualified: str  # "schema.table"
    identity: str  # relreplident: d, i, f or n
    identity_columns: tuple[str, ...]  # the key or index columns (empty for f and n)
    has_route_column: bool
    route_in_identity: bool  # the old row always has the route column

    @property
    def unroutable(self) -> bool:
        has_identity = self.identity == "f" or (
            self.identity in ("d", "i") and bool(self.identity_columns)
        )
        return self.has_route_column and has_identity and not self.route_in_identity

    def describe_identity(self) -> str:
        columns = ", ".join(self.identity_columns)
        if self.identity == "i":
            return f"its replica identity index ({columns})"
        return f"its replica identity, the primary key ({columns}),"

    def statement(self) -> str:
        """The statement that makes the table routable."""
        return f"ALTER TABLE {sql_name(self.qualified)} REPLICA IDENTITY FULL;"

    def fix(self, route_column: str) -> str:
        """:meth:`statement`, and the alternatives."""
        return (
            f"{self.statement()} (or put {route_column} in its primary key or in a "
            "REPLICA IDENTITY USING INDEX index)"
        )

    def why(self, route_column: str) -> str:
        """Why its DELETEs cannot be routed, and the fix, in one sentence."""
        return (
            f"{self.describe_identity()} does not include {route_column}, so its DELETEs "
            f"and channel-moving UPDATEs have no old channel; run {self.fix(route_column)}"
        )

    def problem(self, route_column: str) -> str:
        return f"table {self.qualified}: {self.why(route_column)}"


def from_relation(relation: pgoutput.Relation, route_column: str) -> TableIdentity:
    """The identity as the RELATION message gives it (``is_key`` marks its columns)."""
    # For FULL every column is flagged as part of the identity; for d/i the key's.
    key = tuple(c.name for c in relation.columns if c.is_key)
    names = {c.name for c in relation.columns}
    identity = relation.replica_identity
    return TableIdentity(
        f"{relation.schema}.{relation.name}",
        identity,
        () if identity == "f" else key,
        route_column in names,
        identity == "f" or route_column in key,
    )


# Every table the publication streams, with its identity columns and whether the
# route column exists. pg_publication_tables lists what pgoutput sends: partitions
# or their root (publish_via_partition_root), tables of FOR ALL TABLES / IN SCHEMA.
_PUBLISHED = """
SELECT n.nspname, c.relname, c.relreplident,
       COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid
                   AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                           WHEN 'i' THEN i.indisreplident
                                           ELSE false END),
                '{}') AS identity_columns,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = %(route)s
                 AND a.attnum > 0 AND NOT a.attisdropped) AS has_route
FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
WHERE p.pubname = %(publication)s
ORDER BY 1, 2
"""


def published_identities(
    cur: psycopg2.extensions.cursor, publication: str, route_column: str
) -> list[TableIdentity]:
    """The identity of every table the publication streams UPDATEs or DELETEs of."""
    cur.execute(
        "SELECT pubupdate OR pubdelete FROM pg_publication WHERE pubname = %s", (publication,)
    )
    row = cur.fetchone()
    if row is None or not row[0]:
        return []  # insert/truncate only: no old rows to route
    cur.execute(_PUBLISHED, {"route": route_column, "publication": publication})
    tables = []
    for schema, name, identity, columns, has_route in cur.fetchall():
        columns = tuple(columns)
        tables.append(
            TableIdentity(
                f"{schema}.{name}",
                identity,
                () if identity == "f" else columns,
                has_route,
                identity == "f" or route_column in columns,
            )
        )
    return tables


_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def sql_name(qualified: str) -> str:
    """``schema.table`` as SQL, quoting only the parts that need it."""
    schema, _, table = qualified.partition(".")
    return ".".join(
        part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'
        for part in (schema, table)
    )
