"""The ops API with 100,000 channels: pages stay fast and snapshots are shared.

Generous bounds (the machine is shared): what this guards against is a full scan or
sort per request growing with every viewer, not a few milliseconds. The measured
figures are in docs/console.md (``python -m bench.console_cost``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.console.ops_http import Json, ok_json, publish
from tests.support.servers import ServerProcess, server_process

CHANNELS = 100_000
BATCH = 10_000  # POST /events takes at most this many
FAST_S = 1.0  # per request, measured from this process (loopback HTTP included)


@pytest.fixture(scope="module")
def crowded() -> Iterator[ServerProcess]:
    with server_process("--store", "memory") as proc:
        for start in range(0, CHANNELS, BATCH):
            publish(proc, [(f"tenant-{n:06}", {"n": n}) for n in range(start, start + BATCH)])
        publish(proc, [("tenant-hot", {"n": n}) for n in range(50)])
        yield proc


def timed(
    proc: ServerProcess, path: str, params: dict[str, object] | None = None
) -> tuple[float, Json]:
    started = time.perf_counter()
    body = ok_json(proc, path, params)
    return time.perf_counter() - started, body


def test_with_100000_channels_pages_searches_and_stats_answer_fast(
    crowded: ServerProcess,
) -> None:
    cold, first = timed(crowded, "/api/channels", {"limit": 50})
    assert first["known"] == CHANNELS + 1 and len(first["channels"]) == 50
    assert first["channels"][0]["name"] == "tenant-hot"  # the newest event, and most events
    again, repeat = timed(crowded, "/api/channels", {"limit": 50})
    assert repeat["sampled_at_ms"] == first["sampled_at_ms"]  # one snapshot, shared
    deep, second = timed(crowded, "/api/channels", {"limit": 50, "cursor": first["next_cursor"]})
    assert not {c["name"] for c in second["channels"]} & {c["name"] for c in first["channels"]}
    search, found = timed(crowded, "/api/channels", {"q": "tenant-04999", "limit": 50})
    assert len(found["channels"]) == 10  # tenant-049990 .. tenant-049999
    exact, one = timed(crowded, "/api/channels", {"q": "tenant-012345"})
    assert one["channels"][0]["name"] == "tenant-012345"
    stats_s, stats = timed(crowded, "/api/stats")
    assert stats["store"]["channels"] == CHANNELS + 1
    timings = {
        "cold": cold,
        "cached": again,
        "page 2": deep,
        "search": search,
        "exact": exact,
        "stats": stats_s,
    }
    print({k: f"{v * 1000:.1f} ms" for k, v in timings.items()}, "snapshot", first["snapshot_ms"])
    assert max(timings.values()) < FAST_S, timings
    assert first["snapshot_ms"] < FAST_S * 1000


def test_with_100000_channels_snapshots_are_taken_at_most_every_few_seconds(
    crowded: ServerProcess,
) -> None:
    samples = set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # a viewer far more eager than the page
        samples.add(ok_json(crowded, "/api/channels", {"limit": 10})["sampled_at_ms"])
    assert len(samples) <= 3, samples
