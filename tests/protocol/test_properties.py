"""Property tests: client-message parsing, and travel selection against a model."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena_cdc.log.base import EventLog, Gap, NewEvent, TravelQuery
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.protocol.messages import (
    DEFAULT_TRAVEL_LIMIT,
    MAX_TRAVEL_LIMIT,
    ClientMessage,
    Ping,
    ProtocolError,
    Subscribe,
    Travel,
    Unsubscribe,
    encode_event,
    parse_client_message,
)

CODES = {"invalid_json", "invalid_message", "unknown_type", "invalid_field"}

# -- strategies ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# A channel: 1 to 256 characters, none of them a control character (nor a lone surrogate,
# which JSON text cannot carry).
channels = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=256
)
non_negative = st.integers(min_value=0, max_value=2**63 - 1)
field_names = st.sampled_from(
    ["type", "organization_id", "since_seq", "since_ts_ms", "limit", "subscribe_to_organization_id"]
)
types = st.sampled_from(["travel", "subscribe", "unsubscribe", "ping"]) | json_values
loose_messages = st.dictionaries(
    field_names | st.text(max_size=10), json_values, max_size=6
).flatmap(lambda d: st.just(d) | types.map(lambda t: {**d, "type": t}))


def parse_or_error(data: bytes | str) -> ClientMessage | ProtocolError:
    try:
        return parse_client_message(data)
    except ProtocolError as error:
        return error


@settings(max_examples=400)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_frame_parses_or_is_a_protocol_error(data: bytes | str) -> None:
    result = parse_or_error(data)
    if isinstance(result, ProtocolError):
        assert result.code in CODES
        assert result.message
        message = json.loads(result.to_message())
        assert message["status"] == "error" and message["error"] == result.code


@settings(max_examples=400)
@given(json_values | loose_messages)
def test_any_json_parses_or_is_a_protocol_error(value: Any) -> None:
    result = parse_or_error(json.dumps(value))
    if isinstance(result, ProtocolError):
        assert result.code in CODES, result.code
        if result.code == "invalid_field":
            assert result.field in {
                "organization_id",
                "since_seq",
                "since_ts_ms",
                "limit",
                "subscribe_to_organization_id",
            }
        if not isinstance(value, dict):
            assert result.code == "invalid_message"
    else:
        assert isinstance(value, dict)


@given(
    channel=st.none() | channels,
    since_seq=st.none() | non_negative,
    since_ts_ms=st.none() | non_negative,
    limit=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    omit_nulls=st.booleans(),
)
def test_valid_travel_round_trips(
    channel: str | None,
    since_seq: int | None,
    since_ts_ms: int | None,
    limit: int | None,
    omit_nulls: bool,
) -> None:
    fields = {
        "organization_id": channel,
        "since_seq": since_seq,
        "since_ts_ms": since_ts_ms,
        "limit": limit,
    }
    if omit_nulls:
        fields = {k: v for k, v in fields.items() if v is not None}
    parsed = parse_client_message(json.dumps({"type": "travel", **fields}))
    effective = DEFAULT_TRAVEL_LIMIT if limit is None else min(limit, MAX_TRAVEL_LIMIT)
    assert parsed == Travel(channel, since_seq, since_ts_ms, effective)


@given(channel=channels, kind=st.sampled_from(["subscribe", "unsubscribe", "legacy"]))
def test_valid_subscriptions_round_trip(channel: str, kind: str) -> None:
    if kind == "legacy":
        message: dict[str, Any] = {"subscribe_to_organization_id": channel}
    else:
        message = {"type": kind, "organization_id": channel}
    expected = Unsubscribe(channel) if kind == "unsubscribe" else Subscribe(channel)
    assert parse_client_message(json.dumps(message)) == expected
    assert parse_client_message(json.dumps(message).encode()) == expected


def test_ping_round_trips() -> None:
    assert parse_client_message(b'{"type":"ping"}') == Ping()


not_an_integer = (
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    | st.floats(allow_nan=False, allow_infinity=False)
    .filter(lambda f: f.is_integer())
    .filter(lambda f: abs(f) < 1e15)
    | st.booleans()
    | st.text(max_size=10)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
bad_values = {
    "limit": st.integers(max_value=0) | not_an_integer,
    "since_seq": st.integers(max_value=-1) | not_an_integer,
    "since_ts_ms": st.integers(max_value=-1) | not_an_integer,
    "organization_id": st.just("")
    | st.text(min_size=257, max_size=300, alphabet="abc")
    | st.tuples(channels, st.characters(categories=["Cc"]), channels).map("".join)
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.text(max_size=3), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
}


@given(data=st.data(), field=st.sampled_from(sorted(bad_values)))
def test_travel_field_of_wrong_type_or_range_is_invalid_field(
    data: st.DataObject, field: str
) -> None:
    valid: dict[str, Any] = {
        "organization_id": data.draw(st.none() | channels),
        "since_seq": data.draw(st.none() | non_negative),
        "since_ts_ms": data.draw(st.none() | non_negative),
        "limit": data.draw(st.none() | st.integers(min_value=1, max_value=10**6)),
    }
    valid[field] = data.draw(bad_values[field])
    with pytest.raises(ProtocolError) as raised:
        parse_client_message(json.dumps({"type": "travel", **valid}))
    assert raised.value.code == "invalid_field"
    assert raised.value.field == field


@given(
    kind=st.sampled_from(["subscribe", "unsubscribe", "legacy"]),
    value=bad_values["organization_id"] | st.none(),
)
def test_subscription_channel_of_wrong_type_is_invalid_field(kind: str, value: Any) -> None:
    field = "subscribe_to_organization_id" if kind == "legacy" else "organization_id"
    message: dict[str, Any] = {field: value} if kind == "legacy" else {"type": kind, field: value}
    with pytest.raises(ProtocolError) as raised:
        parse_client_message(json.dumps(message))
    assert (raised.value.code, raised.value.field) == ("invalid_field", field)


# -- travel selection against a model ---------------------------------------------------

CHANNEL_NAMES = ["a", "b", "c"]


@dataclass
class ModelEvent:
    channel: str
    seq: int
    ts_ms: int
    payload: bytes


class Model:
    """The rules of the protocol page, in the plainest Python."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.all: dict[str, list[ModelEvent]] = {}

    def append(self, channel: str, payload: bytes, now: int) -> ModelEvent:
        events = self.all.setdefault(channel, [])
        ts = max(now, events[-1].ts_ms) if events else now
        event = ModelEvent(channel, len(events) + 1, ts, payload)
        events.append(event)
        return event

    def retained(self, channel: str) -> list[ModelEvent]:
        return self.all.get(channel, [])[-self.retention :]

    def dropped(self, channel: str) -> list[ModelEvent]:
        events = self.all.get(channel, [])
        return events[: max(0, len(events) - self.retention)]

    def travel(self, q: TravelQuery) -> tuple[list[ModelEvent], bool, list[Gap]]:
        unique = list(dict.fromkeys(q.channels))
        matched = [
            e
            for channel in unique
            for e in self.retained(channel)
            if (q.since_seq is None or e.seq > q.since_seq)
            and (q.since_ts_ms is None or e.ts_ms >= q.since_ts_ms)
        ]
        matched.sort(key=lambda e: (e.ts_ms, e.channel, e.seq))
        newest = q.since_seq is None and q.since_ts_ms is None
        chosen = matched[-q.limit :] if newest else matched[: q.limit]
        gaps = [g for g in (self.gap(channel, q) for channel in unique) if g is not None]
        return chosen, len(matched) > q.limit, gaps

    def gap(self, channel: str, q: TravelQuery) -> Gap | None:
        """docs/protocol.md: the requested seqs that retention has already dropped."""
        dropped = self.dropped(channel)
        if not dropped:
            return None
        if q.since_ts_ms is not None and dropped[-1].ts_ms < q.since_ts_ms:
            return None  # nothing dropped could have matched the time cursor
        last_seq = len(self.all[channel])
        if q.since_seq is not None:
            start = q.since_seq + 1
        elif q.since_ts_ms is not None:
            start = 1  # the log does not keep the times of dropped events
        else:
            start = max(1, last_seq - q.limit + 1)
        end = dropped[-1].seq
        return Gap(channel, start, end) if start <= end else None


appends = st.lists(
    st.tuples(
        st.lists(st.sampled_from(CHANNEL_NAMES), min_size=1, max_size=5),  # one batch
        st.integers(min_value=-3, max_value=5),  # clock step before it (may go back)
    ),
    min_size=0,
    max_size=25,
)
queries = st.builds(
    TravelQuery,
    channels=st.lists(st.sampled_from([*CHANNEL_NAMES, "z"]), min_size=1, max_size=4).map(tuple),
    since_seq=st.none() | st.integers(min_value=0, max_value=30),
    since_ts_ms=st.none() | st.integers(min_value=995, max_value=1_060),
    limit=st.integers(min_value=1, max_value=40),
)


@contextmanager
def fake_clock(module: str, steps: list[int]) -> Iterator[None]:
    """``now_ms`` of ``module`` returns 1000, then moves by each step (possibly backwards)."""
    times = iter([1000 + sum(steps[: i + 1]) for i in range(len(steps))])
    with mock.patch(f"{module}.now_ms", lambda: next(times)):
        yield


async def run_scenario(
    log: EventLog, model: Model, batches: list[tuple[list[str], int]], qs: list[TravelQuery]
) -> None:
    await log.open()
    try:
        clock = 1000
        counter = 0
        for channels_of_batch, step in batches:
            clock += step
            items = []
            for channel in channels_of_batch:
                counter += 1
                items.append(NewEvent(channel, orjson.dumps({"n": counter})))
            appended = await log.append(items)
            expected = [model.append(i.channel, i.payload, clock) for i in items]
            assert [(e.channel, e.seq, e.ts_ms) for e in appended] == [
                (m.channel, m.seq, m.ts_ms) for m in expected
            ]
        await log.prune()
        for q in qs:
            result = await log.travel(q)
            events, has_more, gaps = model.travel(q)
            assert [(e.channel, e.seq, e.ts_ms) for e in result.events] == [
                (m.channel, m.seq, m.ts_ms) for m in events
            ], q
            assert [e.message for e in result.events] == [
                encode_event(m.channel, m.seq, m.ts_ms, m.payload) for m in events
            ]
            assert result.has_more == has_more, q
            assert result.gaps == gaps, q
    finally:
        await log.close()


@settings(max_examples=300, deadline=None)
@given(
    retention=st.integers(min_value=1, max_value=12),
    batches=appends,
    qs=st.lists(queries, min_size=1, max_size=8),
)
def test_memory_log_travel_matches_the_model(
    retention: int, batches: list[tuple[list[str], int]], qs: list[TravelQuery]
) -> None:
    model = Model(retention)
    log = MemoryLog(retention_events=retention)
    with fake_clock("athena_cdc.log.memory", [step for _, step in batches]):
        asyncio.run(run_scenario(log, model, batches, qs))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    retention=st.integers(min_value=1, max_value=12),
    small_cache=st.booleans(),
    batches=appends,
    qs=st.lists(queries, min_size=1, max_size=8),
)
def test_sqlite_log_travel_matches_the_model(
    retention: int,
    small_cache: bool,
    batches: list[tuple[list[str], int]],
    qs: list[TravelQuery],
) -> None:
    """The same rules from disk: a small cache makes most travels read the file."""
    model = Model(retention)
    with tempfile.TemporaryDirectory() as data_dir:
        log = SqliteLog(
            data_dir,
            retention_events=retention,
            memory_limit=1024 if small_cache else 64 * 1024**2,
            synchronous="normal",
        )
        with fake_clock("athena_cdc.log.sqlite", [step for _, step in batches]):
            asyncio.run(run_scenario(log, model, batches, qs))
