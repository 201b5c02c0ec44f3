"""``python -m bench redis`` end to end, tiny: real nodes, a real Redis, its JSON saved.
(The numbers themselves are not judged here: they are measured with the benchmark.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main


@pytest.mark.timeout(90)
def test_the_redis_bench_runs_every_measure_and_saves_them(
    redis_url: str, tmp_path: Path
) -> None:
    main(
        [
            "redis", "--redis", redis_url + "/12", "--duration", "0.3",
            "--producers", "4", "--batch", "50", "--batch-producers", "2",
            "--rate", "100", "--latency-duration", "0.5", "--idle-channels", "200",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    [saved] = tmp_path.glob("redis-*.json")
    document = json.loads(saved.read_text())
    results = document["results"]
    for name in ("single_http", "single_direct", "batch_http", "batch_direct"):
        assert results[name]["events_per_s"] > 0, name
    assert results["latency"]["received"] == results["latency"]["sent"] > 0
    assert results["idle_memory"]["bytes_per_channel"] > 0
    assert set(document["verdicts"]) == {*document["targets"]}
