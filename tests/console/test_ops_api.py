"""The ops API over real HTTP, against a real server process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import flush_redis
from tests.console.ops_http import Json, get_json, ok_json, publish
from tests.support.servers import ServerProcess, server_process


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    store = request.param
    if store == "redis":
        store = request.getfixturevalue("redis_url") + "/0"
        flush_redis(store)
    with server_process("--store", store, "--data-dir", str(tmp_path / "data")) as proc:
        yield proc


@pytest.fixture(scope="module")
def memory_proc() -> Iterator[ServerProcess]:
    """One server for the tests of this module that use channels of their own."""
    with server_process("--store", "memory", "--retention-events", "5") as proc:
        yield proc


def channels_since(
    proc: ServerProcess, since_ms: int, params: dict[str, object] | None = None
) -> Json:
    """A page of /api/channels from a snapshot taken after ``since_ms`` (snapshots are
    shared for a few seconds, so a channel just made may take that long to show)."""
    deadline = time.monotonic() + 15
    while True:
        page = ok_json(proc, "/api/channels", params)
        if page["sampled_at_ms"] >= since_ms or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def viewer(proc: ServerProcess, name: str) -> ClientConnection:
    """A WebSocket client that need not read what it is sent to close at once."""
    return connect(f"{proc.ws}?client={name}", max_queue=None, close_timeout=1)


def test_stats_report_version_store_connections_and_events_per_second() -> None:
    with server_process("--store", "memory", "--retention-events", "5") as proc:
        check_stats(proc)


def check_stats(memory_proc: ServerProcess) -> None:
    first = ok_json(memory_proc, "/api/stats")
    assert first["version"] and first["store"]["name"] == "memory"
    assert first["events"]["in_per_s"] is None  # one sample: no rate yet
    publish(memory_proc, [("stats", {"n": n}) for n in range(30)])
    with viewer(memory_proc, "stats-viewer") as ws:
        ws.recv(timeout=5)  # subscribed
        time.sleep(1.1)  # viewers asking within a second share a sample
        second = ok_json(memory_proc, "/api/stats")
    assert second["connections"] == 1 and second["subscriptions"] == 1
    assert second["events"]["appended"] == 30
    assert second["events"]["in_per_s"] > 0
    assert second["history"] and second["history"][-1]["in_per_s"] > 0
    assert second["store"]["channels"] == 1 and second["store"]["events"] == 5  # retention
    assert second["sources"] == []


def test_channels_are_listed_busiest_first_with_last_seq_time_and_subscribers(
    any_store: ServerProcess,
) -> None:
    publish(any_store, [("quiet", {"n": 1})] + [("busy", {"n": n}) for n in range(3)])
    with viewer(any_store, "busy") as ws:
        ws.recv(timeout=5)
        ok_json(any_store, "/api/channels")  # the first sample: rates from the next on
        time.sleep(2.1)
        published = publish(any_store, [("busy", {"n": n}) for n in range(40)])
        page = ok_json(any_store, "/api/channels")
    names = [c["name"] for c in page["channels"]]
    assert names[:2] == ["busy", "quiet"], page
    busy = page["channels"][0]
    assert busy["last_seq"] == 43 and busy["subscribers"] == 1
    assert busy["events_per_s"] > 0 and page["window_s"] >= 2
    if busy["last_ts_ms"] is not None:  # sqlite/redis may know only the seq
        assert busy["last_ts_ms"] == published[-1]["ts_ms"]
    assert page["channels"][1]["events_per_s"] == 0


def test_a_channel_search_matches_names_in_any_case_and_finds_any_channel_by_exact_name(
    memory_proc: ServerProcess,
) -> None:
    exact = publish(memory_proc, [("other", 1)])
    # In the snapshot or not yet (then found by its exact name), it is found at once.
    (found,) = ok_json(memory_proc, "/api/channels", {"q": "other"})["channels"]
    assert (found["name"], found["last_seq"]) == ("other", 1)
    published = publish(memory_proc, [(f"org_{n}:orders", {"n": n}) for n in range(12)])
    page = channels_since(memory_proc, published[-1]["ts_ms"], {"q": "ORG_1"})
    expected = ["org_10:orders", "org_11:orders", "org_1:orders"]
    assert sorted(c["name"] for c in page["channels"]) == expected
    page = channels_since(memory_proc, exact[-1]["ts_ms"], {"q": "other"})
    assert [c["name"] for c in page["channels"]] == ["other"]
    assert ok_json(memory_proc, "/api/channels", {"q": "nothing-like-it"})["channels"] == []


def test_channel_pages_follow_their_cursor_to_the_end_without_repeats(
    memory_proc: ServerProcess,
) -> None:
    published = publish(memory_proc, [(f"paged-{n:03}", {"n": n}) for n in range(23)])
    channels_since(memory_proc, published[-1]["ts_ms"])
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"q": "paged-", "limit": 10, **({"cursor": cursor} if cursor else {})}
        page = ok_json(memory_proc, "/api/channels", params)
        seen += [c["name"] for c in page["channels"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"paged-{n:03}" for n in range(23)] and len(seen) == 23


def test_one_channel_shows_its_bounds_last_event_and_events_per_second(
    memory_proc: ServerProcess,
) -> None:
    published = publish(memory_proc, [("one", {"n": n}) for n in range(8)])
    info = ok_json(memory_proc, "/api/channel", {"name": "one"})
    assert (info["first_seq"], info["last_seq"], info["retained"]) == (4, 8, 5)
    assert info["last_ts_ms"] == published[-1]["ts_ms"] and info["subscribers"] == 0
    assert info["events_per_s"] is None  # its first sample
    time.sleep(1.1)
    publish(memory_proc, [("one", {"n": n}) for n in range(20)])
    assert ok_json(memory_proc, "/api/channel", {"name": "one"})["events_per_s"] > 0
    never = ok_json(memory_proc, "/api/channel", {"name": "never-used"})
    assert (never["last_seq"], never["retained"], never["last_ts_ms"]) == (0, 0, None)


def test_a_travel_over_http_pages_through_has_more_and_shows_gaps(
    memory_proc: ServerProcess,
) -> None:
    publish(memory_proc, [("travel", {"n": n}) for n in range(1, 9)])  # keeps seqs 4..8
    first = ok_json(memory_proc, "/api/events", {"channel": "travel", "since_seq": 0, "limit": 3})
    assert [e["data"]["seq"] for e in first["events"]] == [4, 5, 6]
    assert first["events"][0] == {
        "organization_id": "travel",
        "data": {"seq": 4, "ts_ms": first["events"][0]["data"]["ts_ms"], "payload": {"n": 4}},
    }
    assert first["has_more"] and first["gaps"] == [{"from_seq": 1, "to_seq": 3}]
    rest = ok_json(
        memory_proc,
        "/api/events",
        {"channel": "travel", "since_seq": first["next_since_seq"], "limit": 3},
    )
    assert [e["data"]["seq"] for e in rest["events"]] == [7, 8]
    assert not rest["has_more"] and rest["gaps"] == []
    newest = ok_json(memory_proc, "/api/events", {"channel": "travel", "limit": 2})
    assert [e["data"]["seq"] for e in newest["events"]] == [7, 8]
    ts = first["events"][2]["data"]["ts_ms"]
    by_time = ok_json(memory_proc, "/api/events", {"channel": "travel", "since_ts_ms": ts})
    assert all(e["data"]["ts_ms"] >= ts for e in by_time["events"]) and by_time["count"] >= 1


def test_connections_show_client_name_remote_address_subscriptions_queued_bytes_and_age(
    memory_proc: ServerProcess,
) -> None:
    with viewer(memory_proc, "conn-watcher") as ws:
        ws.recv(timeout=5)
        local = ws.socket.getsockname()
        time.sleep(0.2)
        page = ok_json(memory_proc, "/api/connections")
    assert page["total"] == 1 and page["slow"] == 0 and page["next_cursor"] is None
    (row,) = page["connections"]
    assert row["client"] == "conn-watcher"
    assert row["remote"] == f"{local[0]}:{local[1]}"
    assert row["subscriptions"] == ["conn-watcher"] and row["subscription_count"] == 1
    assert row["queued_bytes"] == 0 and row["age_s"] >= 0.1 and row["slow"] is False


def test_a_client_that_stops_reading_is_marked_slow() -> None:
    with (
        server_process("--store", "memory", "--slow-consumer-limit", "8MiB") as proc,
        connect(proc.ws + "?client=stuck", max_size=None, close_timeout=0.5) as ws,
    ):
        ws.recv(timeout=5)  # and no more: its socket fills up
        payload = {"blob": "x" * 60_000}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            publish(proc, [("stuck", payload)] * 10)
            page = ok_json(proc, "/api/connections")
            (row,) = page["connections"]
            if row["slow"]:
                break
        assert row["slow"] and page["slow"] == 1 and row["queued_bytes"] > 0, page


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/api/channels", {"limit": "ten"}, '"limit" must be an integer'),
        ("/api/channels", {"cursor": "not-a-cursor"}, "not a cursor of this API"),
        ("/api/channels", {"q": "x" * 300}, '"q" must be at most'),
        ("/api/connections", {"cursor": "eyJ4Ijox"}, "not a cursor of this API"),
        ("/api/channel", {}, '"name" (a channel name) is required'),
        ("/api/events", {"channel": ""}, '"channel" must not be empty'),
        ("/api/events", {"channel": "a", "since_seq": "-1"}, '"since_seq" must be an integer'),
        ("/api/events", {"channel": "a", "since_ts_ms": "9" * 30}, '"since_ts_ms" must be'),
        ("/api/events", {"channel": "a\x01"}, "control characters"),
    ],
)
def test_bad_parameters_are_answered_400_with_a_message(
    memory_proc: ServerProcess, path: str, params: dict[str, str], says: str
) -> None:
    status, body = get_json(memory_proc, path, params)
    assert status == 400 and body["error"] == "invalid_parameter", body
    assert says in body["message"], body


def test_limits_are_clamped_to_their_bounds(memory_proc: ServerProcess) -> None:
    publish(memory_proc, [("clamp", {"n": n}) for n in range(5)])
    huge = ok_json(memory_proc, "/api/events", {"channel": "clamp", "limit": 10**9})
    assert huge["limit"] == 1000
    assert ok_json(memory_proc, "/api/events", {"channel": "clamp", "limit": 0})["limit"] == 1
