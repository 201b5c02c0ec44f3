"""Which channel a change belongs to.

Rules, first match wins:

1. the table has an override (``[tables."schema.table"] channel = "..."`` in the
   config file): every change of that table goes to that channel;
2. the row's routing column (``route_column``, default ``organization_id``): its
   text form is the channel -- taken from the new row, or for a delete from the old
   row (present there only with REPLICA IDENTITY FULL or when the column is part of
   the replica identity); an update that changes it goes to the old channel too;
3. ``default_channel`` when set;
4. otherwise the change is skipped: counted, and logged once per table.

A truncate has no rows, so only rules 1, 3 and 4 apply to it.

A table whose replica identity lacks the routing column (:mod:`.identity`) has
deletes without a channel and updates whose old channel is unknown. ``unroutable``
(``--pg-unroutable``) says what then: ``refuse`` (the default) stops the source,
``default-channel`` sends such deletes to ``default_channel``, ``skip`` skips them;
with either fallback such an update reaches only its new channel. Logged once per
table, never silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from athena_cdc.protocol.messages import channel_problem
from athena_cdc.sources.postgres.identity import DEFAULT_CHANNEL, SKIP, TableIdentity

log = logging.getLogger(__name__)


@dataclass
class Router:
    route_column: str
    default_channel: str | None = None
    table_channels: dict[str, str] = field(default_factory=dict)  # "schema.table" → channel
    unroutable: str = "refuse"  # --pg-unroutable: refuse, default-channel or skip
    _warned: set[tuple[str, str]] = field(default_factory=set)
    # Routing values already checked: validating every row's value is measurable.
    _channels: dict[bytes, str] = field(default_factory=dict)

    def table_channel(self, table: str) -> str | None:
        """The override for ``table`` ("schema.table"), if any."""
        return self.table_channels.get(table)

    def channel_for(self, table: str, value: bytes | None) -> str | None:
        """Channel of a row of ``table`` whose routing column holds ``value``.

        ``value`` is the column's text form, ``None`` when the column is absent, NULL,
        or not sent. Returns ``None`` when the row is to be skipped.
        """
        if value:
            known = self._channels.get(value)
            if known is not None:
                return known
            channel = value.decode()
            problem = channel_problem(channel)
            if problem is None:
                if len(self._channels) >= 100_000:  # bounded: channels can be many
                    self._channels.clear()
                self._channels[value] = channel
                return channel
            self._warn_once(
                table, "invalid", f"a {self.route_column} value {problem} ({channel[:60]!r})"
            )
        if self.default_channel is not None:
            return self.default_channel
        self._warn_once(
            table,
            "missing",
            f"rows without a usable {self.route_column} are skipped (no default channel)",
        )
        return None

    def truncate_channel(self, table: str) -> str | None:
        channel = self.table_channels.get(table, self.default_channel)
        if channel is None:
            self._warn_once(
                table, "truncate", "truncate skipped: no table override, no default channel"
            )
        return channel

    def is_unroutable(self, identity: TableIdentity) -> bool:
        """True if the table's deletes (and channel moves) have no known old channel."""
        return identity.unroutable and identity.qualified not in self.table_channels

    def note_unroutable(self, identity: TableIdentity) -> None:
        """Say once per table what happens to its UPDATEs and DELETEs."""
        problem = identity.why(self.route_column)
        if self.unroutable == DEFAULT_CHANNEL:
            fate = (
                f"Until then its DELETEs go to the default channel {self.default_channel!r} "
                "and an UPDATE that moves a row reaches only the new channel"
            )
        elif self.unroutable == SKIP:
            fate = (
                "Until then its DELETEs are skipped (counted in rows_skipped) and an UPDATE "
                "that moves a row reaches only the new channel"
            )
        else:
            fate = "Its inserts stream; its first UPDATE or DELETE stops the source"
        self._warn_once(identity.qualified, "unroutable", f"{problem}. {fate}")

    def unknown_old_channel(self) -> str | None:
        """Channel of a delete whose old row has no routing value (a fallback is on)."""
        return self.default_channel if self.unroutable == DEFAULT_CHANNEL else None

    def _warn_once(self, table: str, kind: str, reason: str) -> None:
        # A busy table without a routing column would otherwise flood the log.
        key = (table, kind)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("postgres source: table %s: %s (logged once per table)", table, reason)
