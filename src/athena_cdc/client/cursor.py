"""One channel's place in its log, and the rule that hands its items over in order.

A :class:`Cursor` knows the last seq it handed over (``seq``) and the log's epoch. Every
event of its channel goes through :meth:`Cursor.accept`, whether it came live or from a
travel (on the wire they look the same): seqs at or below ``seq`` are dropped as
repeats, the next seq is handed over, and later ones wait in a reorder buffer until
the seqs before them arrive or a travel's ``gaps`` says they never will. So nothing is
handed over twice or out of order, however live events and travel pages interleave
(live events sent before a travel began arrive before its replay, and a travel's ack
reports gaps only after the events behind them).

No I/O here: the connection feeds the cursor what the server sends and sends the
requests it asks for (:meth:`Cursor.next_request`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from athena_cdc.client.items import Event, Gap, Item, Reset

Json = Any


class Phase(enum.Enum):
    PROBING = "probing"  # no position yet: asking the log where "now" / --last / --since is
    SUBSCRIBING = "subscribing"
    CATCHING_UP = "catching_up"  # travelling from seq, page after page
    LIVE = "live"


class Step(enum.Enum):
    """The kinds of request a cursor sends, each answered by one reply."""

    PROBE_HEAD = "probe_head"  # travel limit 1, no cursor: the newest seq
    PROBE_SINCE_TS = "probe_since_ts"  # travel since_ts_ms, limit 1: the first seq at or after
    SUBSCRIBE = "subscribe"
    CATCH_UP = "catch_up"  # travel since_seq


@dataclass(frozen=True)
class Start:
    """Where a new subscription starts: after ``since_seq``; at the first event at or
    after ``since_ts_ms``; ``last`` events before the newest; or (all None) at the
    newest event when the client first reaches the server."""

    since_seq: int | None = None
    since_ts_ms: int | None = None
    last: int | None = None


class Cursor:
    def __init__(self, channel: str, start: Start, epoch: str | None = None) -> None:
        self.channel = channel
        self.start = start
        self.seq: int | None = start.since_seq  # None until positioned
        self.epoch = epoch
        self.phase = Phase.SUBSCRIBING
        self.waiting: Step | None = None  # the request in flight, if any
        self._pending: dict[int, Event] = {}  # received ahead of seq + 1
        self._lost: list[tuple[int, int]] = []  # gaps reported, not reached yet
        self._head: int | None = None
        self._probe_seqs: list[int] = []
        self.disconnected()

    # -- the connection's life ----------------------------------------------------------

    def disconnected(self) -> None:
        """Forget what belonged to the connection; the next one starts from ``seq``."""
        self.phase = Phase.PROBING if self.seq is None else Phase.SUBSCRIBING
        self.waiting = None
        self._pending.clear()
        self._lost.clear()
        self._head = None
        self._probe_seqs.clear()

    def epoch_seen(self, epoch: str | None) -> list[Item]:
        """The server said which epoch its log has: start over if it is a new one."""
        if epoch is None or epoch == self.epoch:
            return []
        old, self.epoch = self.epoch, epoch
        if old is None or self.seq is None:
            return []  # first contact: this is the channel's epoch
        reset = Reset(self.channel, old, epoch, self.seq)
        self.seq = 0  # the new log's seqs start at 1
        self._pending.clear()
        self._lost.clear()
        if self.phase in (Phase.CATCHING_UP, Phase.LIVE):
            self.phase = Phase.CATCHING_UP
        return [reset]

    # -- requests -----------------------------------------------------------------------

    def next_request(self, page_size: int) -> tuple[Step, dict[str, Json]] | None:
        """The request to send now (and mark in flight), or None."""
        if self.waiting is not None:
            return None
        request = self._request(page_size)
        if request is not None:
            self.waiting = request[0]
        return request

    def _request(self, page_size: int) -> tuple[Step, dict[str, Json]] | None:
        channel = self.channel
        if self.phase is Phase.PROBING:
            if self._head is None:
                return Step.PROBE_HEAD, {"type": "travel", "organization_id": channel, "limit": 1}
            assert self.start.since_ts_ms is not None
            return Step.PROBE_SINCE_TS, {
                "type": "travel",
                "organization_id": channel,
                "since_ts_ms": self.start.since_ts_ms,
                "limit": 1,
            }
        if self.phase is Phase.SUBSCRIBING:
            return Step.SUBSCRIBE, {"type": "subscribe", "organization_id": channel}
        if self.phase is Phase.CATCHING_UP:
            return Step.CATCH_UP, {
                "type": "travel",
                "organization_id": channel,
                "since_seq": self.seq,
                "limit": page_size,
            }
        return None

    def failed(self) -> None:
        """The request in flight was refused for a passing reason: send it again later."""
        self.waiting = None

    # -- what the server sends ----------------------------------------------------------

    def probe_event(self, seq: int) -> None:
        """An event of the probe in flight (the channel is not subscribed meanwhile)."""
        self._probe_seqs.append(seq)

    def accept(self, event: Event) -> list[Item]:
        """An event of the channel, live or replayed: what can be handed over now."""
        if self.seq is None or event.seq <= self.seq:
            return []
        self._pending.setdefault(event.seq, event)
        items = self._drain()
        if self._pending and self.phase is Phase.LIVE:
            # A live event skipped a seq (the protocol says it cannot): fetch it.
            self.phase = Phase.CATCHING_UP
        return items

    def replied(self, step: Step, reply: dict[str, Json]) -> list[Item]:
        """The answer to the request in flight (a ``subscribed`` or ``travel_complete``)."""
        self.waiting = None
        items = self.epoch_seen(reply.get("epoch"))
        if step is Step.PROBE_HEAD:
            self._head = max([0, *self._probe_seqs, *self._gap_ends(reply)])
            self._probe_seqs.clear()
            if self.start.since_ts_ms is None:
                self._positioned(max(0, self._head - (self.start.last or 0)))
        elif step is Step.PROBE_SINCE_TS:
            assert self._head is not None
            firsts = [*self._probe_seqs, *self._gap_starts(reply)]
            self._probe_seqs.clear()
            # ts_ms never decreases along seqs, so what is at or after since_ts_ms is a
            # suffix of the log: start before its first seq (or at the head, if none).
            self._positioned(min([self._head, *(seq - 1 for seq in firsts)]))
        elif step is Step.SUBSCRIBE:
            if self.phase is Phase.SUBSCRIBING:
                self.phase = Phase.CATCHING_UP
        elif step is Step.CATCH_UP and self.phase is Phase.CATCHING_UP:
            items += self._gaps(reply)
            if not reply.get("has_more") and not self._pending:
                self.phase = Phase.LIVE
            # else: another page, or a hole the log did not explain: travel again from seq
        return items

    def _positioned(self, seq: int) -> None:
        self.seq = seq
        self.phase = Phase.SUBSCRIBING

    def _gap_ends(self, reply: dict[str, Json]) -> list[int]:
        return [g["to_seq"] for g in self._own_gaps(reply)]

    def _gap_starts(self, reply: dict[str, Json]) -> list[int]:
        return [g["from_seq"] for g in self._own_gaps(reply)]

    def _own_gaps(self, reply: dict[str, Json]) -> list[dict[str, Json]]:
        gaps = reply.get("gaps")
        if not isinstance(gaps, list):
            return []
        return [
            g
            for g in gaps
            if isinstance(g, dict)
            and g.get("organization_id") == self.channel
            and isinstance(g.get("from_seq"), int)
            and isinstance(g.get("to_seq"), int)
        ]

    def _gaps(self, reply: dict[str, Json]) -> list[Item]:
        for gap in self._own_gaps(reply):
            self._lost.append((gap["from_seq"], gap["to_seq"]))
        self._lost.sort()
        return self._drain()

    def _drain(self) -> list[Item]:
        """Hand over what follows ``seq`` without a hole: events, and gaps the log reported."""
        assert self.seq is not None
        items: list[Item] = []
        while True:
            following = self.seq + 1
            event = self._pending.pop(following, None)
            if event is not None:
                items.append(event)
                self.seq = following
                continue
            self._lost = [(a, b) for a, b in self._lost if b > self.seq]
            if self._lost and self._lost[0][0] <= following:
                to_seq = self._lost.pop(0)[1]
                items.append(Gap(self.channel, following, to_seq, self.epoch))
                self.seq = to_seq
                for seq in [s for s in self._pending if s <= to_seq]:
                    del self._pending[seq]
                continue
            return items
