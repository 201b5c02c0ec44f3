"""What a client hands to the application: events, gaps, resets, dropped subscriptions.

Plain frozen dataclasses with no dependency, so that an application can build, compare
and persist them without importing the connection machinery.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel stands: every seq up to ``seq`` has been handed over (as an event
    or inside a gap), under the log's ``epoch``. Persist both; pass them back to
    ``subscribe(channel, since_seq=seq, epoch=epoch)`` to go on without loss."""

    seq: int
    epoch: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a channel, in seq order, never twice."""

    channel: str
    seq: int
    ts_ms: int
    payload: Any
    epoch: str | None = None

    @property
    def position(self) -> Position:
        return Position(self.seq, self.epoch)


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``from_seq``..``to_seq`` (inclusive) of ``channel`` are gone: retention
    dropped them before the client could read them. The next item of the channel is
    ``to_seq + 1``."""

    channel: str
    from_seq: int
    to_seq: int
    epoch: str | None = None

    @property
    def position(self) -> Position:
        return Position(self.to_seq, self.epoch)


@dataclass(frozen=True, slots=True)
class Reset:
    """The log of ``channel`` started over under a new epoch (a memory store restarted,
    a Redis lost its data, a damaged data dir was accepted): seqs of ``old_epoch`` mean
    nothing any more. The client starts the channel over: what follows is the channel's
    whole retained log under ``new_epoch``, from seq 1. ``last_seq`` is the position
    the client had reached under the old epoch."""

    channel: str
    old_epoch: str | None
    new_epoch: str
    last_seq: int

    @property
    def position(self) -> Position:
        return Position(0, self.new_epoch)


@dataclass(frozen=True, slots=True)
class Dropped:
    """The server ended this subscription and the client will not resume it:
    ``reason`` is the server's error code (``forbidden`` when the token does not, or no
    longer, cover the channel; ``limit_exceeded`` beyond ``--max-subscriptions``;
    ``invalid_field`` for a channel name or cursor the server refuses) and ``message``
    its words."""

    channel: str
    reason: str
    message: str = ""


Item = Event | Gap | Reset | Dropped


class State(enum.Enum):
    """The client's state, as ``Client.state`` reports it."""

    CONNECTING = "connecting"  # no connection (the first, or between reconnects)
    CATCHING_UP = "catching_up"  # connected; some channel is still replaying what it missed
    LIVE = "live"  # connected, and every channel has caught up: what comes now is live
    CLOSED = "closed"  # closed by the application, or failed for good
