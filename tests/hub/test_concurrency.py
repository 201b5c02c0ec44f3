"""Many clients, many producers: live streams stay gap-free and travels match the log.

200 WebSocket clients and 10 producers run against one server process. Each client is
subscribed to its own channel (its client name) from before the first event, adds other
channels while events flow, and sends travels: on channels it is not subscribed to (whose
results are checked exactly against what the producers were told by POST /events), and on
its own channels (which exercises the hold-back of live events during a travel).

Checked, for every client and every channel it is subscribed to:
- no gap: a live event is always the next seq after the highest seen on that channel;
- no duplicate and no step back, except inside a travel answer that covers the channel;
- nothing lost: at the end every client has seen its channels up to the last seq, and has
  seen every seq of its own channel;
- every event seen (live or replayed) has the seq, ts_ms and payload the log assigned.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.servers import ServerProcess, server_process

CLIENTS = 200
PRODUCERS = 10
CHANNELS = [f"ch{i:02d}" for i in range(20)]
REQUESTS_PER_PRODUCER = 150
ACTIONS_PER_CLIENT = 10


@dataclass
class Truth:
    """What the producers were told: (channel, seq) → (ts_ms, payload)."""

    events: dict[tuple[str, int], tuple[int, Any]] = field(default_factory=dict)
    confirmed: dict[str, int] = field(default_factory=dict)  # highest seq acknowledged

    def record(self, channel: str, seq: int, ts_ms: int, payload: Any) -> None:
        assert (channel, seq) not in self.events, f"seq {seq} of {channel} assigned twice"
        self.events[(channel, seq)] = (ts_ms, payload)
        self.confirmed[channel] = max(self.confirmed.get(channel, 0), seq)


@dataclass
class TravelAsk:
    channel: str | None  # None: every subscribed channel
    since_seq: int | None
    limit: int
    confirmed_at_send: int  # for an explicit channel: highest seq acknowledged when sent
    subscribed: bool  # whether the channel(s) are subscribed (hold-back case)
    events: list[tuple[str, int, int, Any]] = field(default_factory=list)


@dataclass
class SubscribeAsk:
    channel: str


class Watcher:
    """One client: sends random requests, checks every message it receives."""

    def __init__(self, index: int, ws: ClientConnection, truth: Truth, rng: random.Random):
        self.name = CHANNELS[index % len(CHANNELS)]
        self.ws = ws
        self.truth = truth
        self.rng = rng
        others = [c for c in CHANNELS if c != self.name]
        rng.shuffle(others)
        self.to_subscribe = others[: rng.randint(0, 2)]
        self.travel_targets = others[2:6]
        self.subscribed: set[str] = {self.name}
        self.frontier: dict[str, int] = {self.name: 0}  # highest seq seen per channel
        self.own_seen: set[int] = set()
        self.pending: deque[TravelAsk | SubscribeAsk] = deque()
        self.seen: list[tuple[str, int, int, Any]] = []
        self.errors: list[str] = []
        self.travels_checked = 0

    def fail(self, problem: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{self.name}: {problem}")

    # -- actions -------------------------------------------------------------------
    async def act(self) -> None:
        for _ in range(ACTIONS_PER_CLIENT):
            await asyncio.sleep(self.rng.uniform(0.0, 0.4))
            roll = self.rng.random()
            if roll < 0.2 and self.to_subscribe:
                channel = self.to_subscribe.pop()
                self.pending.append(SubscribeAsk(channel))
                await self.ws.send(json.dumps({"type": "subscribe", "organization_id": channel}))
            elif roll < 0.65:
                channel = self.rng.choice(self.travel_targets)
                confirmed = self.truth.confirmed.get(channel, 0)
                head = self.rng.random() < 0.5
                since = self.rng.randint(0, confirmed) if head else None
                await self.send_travel(
                    TravelAsk(channel, since, self.rng.randint(1, 80), confirmed, False)
                )
            elif roll < 0.85:
                await self.send_travel(TravelAsk(self.name, None, self.rng.randint(1, 60), 0, True))
            else:
                await self.send_travel(TravelAsk(None, None, self.rng.randint(1, 60), 0, True))

    async def send_travel(self, ask: TravelAsk) -> None:
        self.pending.append(ask)
        message: dict[str, Any] = {"type": "travel", "limit": ask.limit}
        if ask.channel is not None:
            message["organization_id"] = ask.channel
        if ask.since_seq is not None:
            message["since_seq"] = ask.since_seq
        await self.ws.send(json.dumps(message))

    # -- checks --------------------------------------------------------------------
    def travel_covering(self, channel: str) -> TravelAsk | None:
        for ask in self.pending:
            if isinstance(ask, TravelAsk) and ask.subscribed and ask.channel in (None, channel):
                return ask
        return None

    def on_message(self, text: str | bytes) -> None:
        message = json.loads(text)
        if "data" in message:
            self.on_event(message)
            return
        status = message.get("status")
        if not self.pending:
            self.fail(f"unexpected message {message}")
            return
        ask = self.pending.popleft()
        if isinstance(ask, SubscribeAsk):
            if message != {
                "status": "subscribed",
                "client_id": self.name,
                "organization_id": ask.channel,
                "epoch": message.get("epoch") or "(missing)",  # the log's, invariant 6
            }:
                self.fail(f"bad subscribe reply {message}")
            self.subscribed.add(ask.channel)
        elif status != "travel_complete":
            self.fail(f"expected a travel ack, got {message}")
        else:
            self.check_travel(ask, message)

    def on_event(self, message: dict[str, Any]) -> None:
        channel = message["organization_id"]
        data = message["data"]
        seq = data["seq"]
        record = (channel, seq, data["ts_ms"], data["payload"])
        self.seen.append(record)
        if channel not in self.subscribed:
            # Only an explicit travel on an unsubscribed channel may send it.
            ask = self.pending[0] if self.pending else None
            if not isinstance(ask, TravelAsk) or ask.subscribed or ask.channel != channel:
                self.fail(f"event of unsubscribed {channel} seq {seq} outside a travel")
            else:
                ask.events.append(record)
            return
        if channel == self.name:
            self.own_seen.add(seq)
        frontier = self.frontier.get(channel)
        if frontier is None or seq == frontier + 1:
            self.frontier[channel] = seq
        elif seq > frontier + 1:
            self.fail(f"gap on {channel}: seq {seq} after {frontier}")
            self.frontier[channel] = seq
        elif self.travel_covering(channel) is None:
            self.fail(f"{channel} seq {seq} again (highest seen {frontier}) outside a travel")

    def check_travel(self, ask: TravelAsk, ack: dict[str, Any]) -> None:
        expected_ack = {
            "status": "travel_complete",
            "organization_id": ask.channel,
            "since_seq": ask.since_seq,
            "since_ts_ms": None,
            "limit": ask.limit,
        }
        if {k: ack.get(k) for k in expected_ack} != expected_ack or ack.get("gaps") != []:
            self.fail(f"bad ack {ack} for {ask}")
        if ask.subscribed:
            return  # checked event by event, with the frontier
        self.travels_checked += 1
        seqs = [seq for _, seq, _, _ in ask.events]
        if ack["count"] != len(seqs):
            self.fail(f"count {ack['count']} but {len(seqs)} events")
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False:
            self.fail(f"travel events not contiguous: {seqs[:5]}...")
        if len(seqs) > ask.limit:
            self.fail(f"{len(seqs)} events for limit {ask.limit}")
        if ask.since_seq is not None:  # head: the oldest after the cursor
            if seqs and seqs[0] != ask.since_seq + 1:
                self.fail(f"head travel from {ask.since_seq} starts at {seqs[0]}")
            if (
                not ack["has_more"]
                and (seqs[-1] if seqs else ask.since_seq) < ask.confirmed_at_send
            ):
                self.fail(f"travel ended before acknowledged seq {ask.confirmed_at_send}")
            if len(seqs) < ask.limit and ack["has_more"]:
                self.fail("has_more with fewer events than the limit")
        else:  # tail: the newest
            if ask.confirmed_at_send and (not seqs or seqs[-1] < ask.confirmed_at_send):
                self.fail(
                    f"tail travel misses acknowledged seq {ask.confirmed_at_send}: {seqs[-3:]}"
                )
            if seqs and ack["has_more"] != (seqs[0] > 1):
                self.fail(f"has_more {ack['has_more']} but first seq {seqs[0]}")

    async def read(self) -> None:
        async for text in self.ws:
            try:
                self.on_message(text)
            except Exception as exc:  # a malformed message is a failure, not a crash
                self.fail(f"{type(exc).__name__}: {exc}")

    def caught_up(self, final: dict[str, int]) -> bool:
        return not self.pending and all(
            self.frontier.get(c) == final.get(c) for c in self.subscribed if final.get(c)
        )


async def produce(proc: ServerProcess, truth: Truth, rng: random.Random, producer: int) -> None:
    async with aiohttp.ClientSession() as http:
        for n in range(REQUESTS_PER_PRODUCER):
            batch = [
                {
                    "organization_id": rng.choice(CHANNELS),
                    "payload": {"p": producer, "n": n, "i": i, "f": rng.random()},
                }
                for i in range(rng.randint(1, 12))
            ]
            async with http.post(proc.base + "/events", json=batch) as response:
                assert response.status == 201, await response.text()
                answer = await response.json()
            for item, assigned in zip(batch, answer["events"], strict=True):
                assert assigned["organization_id"] == item["organization_id"]
                truth.record(
                    assigned["organization_id"], assigned["seq"], assigned["ts_ms"], item["payload"]
                )
            await asyncio.sleep(rng.uniform(0, 0.03))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_many_clients_and_producers(store: str, tmp_path: Path) -> None:
    args = ["--store", store, "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    with server_process(*args, log_path=tmp_path / "server.log") as proc:
        await drive_and_check(proc, random.Random(20261128))


async def drive_and_check(
    proc: ServerProcess,
    rng: random.Random,
    on_connect: Callable[[ClientConnection], None] = lambda ws: None,
) -> None:
    """CLIENTS watchers and PRODUCERS producers against ``proc`` until every watcher has
    caught up; then every check: no error, each client's own channel seen exactly
    1..last, every event as published, each seq assigned once, travels done."""
    truth = Truth()
    sockets = []
    watchers: list[Watcher] = []
    try:
        for i in range(CLIENTS):
            ws = await connect(
                proc.ws,
                additional_headers={"X-Athena-Client": CHANNELS[i % len(CHANNELS)]},
                max_size=None,
            )
            sockets.append(ws)
            on_connect(ws)
            hello = json.loads(await ws.recv())
            assert hello["status"] == "subscribed"
            watchers.append(Watcher(i, ws, truth, random.Random(rng.random())))
        readers = [asyncio.create_task(w.read()) for w in watchers]
        await asyncio.gather(
            *(produce(proc, truth, random.Random(rng.random()), p) for p in range(PRODUCERS)),
            *(w.act() for w in watchers),
        )
        final = dict(truth.confirmed)
        for _ in range(300):
            if all(w.caught_up(final) for w in watchers):
                break
            await asyncio.sleep(0.1)
        lagging = [w.name for w in watchers if not w.caught_up(final)]
        assert not lagging, f"{len(lagging)} clients did not catch up"
    finally:
        for ws in sockets:
            await ws.close()
    for task in readers:
        await task

    errors = [e for w in watchers for e in w.errors]
    assert not errors, "\n".join(errors[:30])
    for w in watchers:
        assert w.own_seen == set(range(1, final.get(w.name, 0) + 1)), w.name
        for channel, seq, ts_ms, payload in w.seen:
            assert truth.events[(channel, seq)] == (ts_ms, payload), (w.name, channel, seq)
    assert len(truth.events) == sum(final.values())  # seqs 1..last, each assigned once
    assert sum(w.travels_checked for w in watchers) > CLIENTS  # the travels did happen


class _NoSocket:
    async def send(self, text: str) -> None:  # pragma: no cover - not used
        raise AssertionError(text)


def live(channel: str, seq: int, truth: Truth) -> str:
    ts_ms, payload = truth.events.setdefault((channel, seq), (1, seq))
    return json.dumps(
        {"organization_id": channel, "data": {"seq": seq, "ts_ms": ts_ms, "payload": payload}}
    )


def test_the_checker_sees_gaps_duplicates_and_strangers() -> None:
    """The checks above are only worth something if they can fail."""
    truth = Truth()
    watcher = Watcher(0, _NoSocket(), truth, random.Random(1))  # type: ignore[arg-type]
    own = watcher.name
    stranger = next(c for c in CHANNELS if c != own)
    for seq in (1, 2, 4, 4, 5):
        watcher.on_message(live(own, seq, truth))
    watcher.on_message(live(stranger, 1, truth))
    assert len(watcher.errors) == 3, watcher.errors
    assert "gap" in watcher.errors[0]
    assert "again" in watcher.errors[1]
    assert "unsubscribed" in watcher.errors[2]
    # Inside a travel on the own channel, older seqs are fine, and so is the ack.
    clean = Watcher(0, _NoSocket(), truth, random.Random(1))  # type: ignore[arg-type]
    clean.pending.append(TravelAsk(own, None, 2, 0, True))
    for seq in (1, 2, 3, 1, 2, 3):
        clean.on_message(live(own, seq, truth))
    clean.on_message(
        json.dumps(
            {
                "status": "travel_complete",
                "organization_id": own,
                "since_seq": None,
                "since_ts_ms": None,
                "limit": 2,
                "count": 3,
                "has_more": False,
                "gaps": [],
            }
        )
    )
    clean.on_message(live(own, 4, truth))
    assert clean.errors == []
    assert clean.caught_up({own: 4})
