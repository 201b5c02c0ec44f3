"""Smoke test of the benchmark harness: tiny runs against a real ``athena-cdc serve``.

The benchmarks themselves do not run in CI; this proves the harness works end to end
(server subprocess, picows load-generator workers, publisher, CPU accounting, reports)
in a few seconds, plus unit checks of its pure parts.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from athena_cdc.bench import main
from athena_cdc.bench.loadgen import LoadGen
from athena_cdc.bench.procstat import cpu_seconds, rss_bytes
from athena_cdc.bench.report import summary
from athena_cdc.bench.scenarios import SCENARIOS, Bench, run_scenario
from athena_cdc.bench.silent import close_code
from athena_cdc.bench.stats import latency_summary, percentile
from athena_cdc.bench.verdicts import judge


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    loadgen = LoadGen(workers=1)
    try:
        yield Bench(loadgen, [("athena", "memory")], say=lambda _: None)
    finally:
        await loadgen.shutdown()


@pytest.mark.timeout(60)
async def test_burst_and_steady_against_athena(bench: Bench) -> None:
    burst = SCENARIOS["burst"]
    params = {**burst.defaults, "subscribers": 5, "events": 50, "rounds": 1, "timeout": 10.0}
    [row] = await run_scenario(bench, burst, params)
    assert "error" not in row, row
    assert row["complete"] is True
    assert row["delivered_per_round"] == 250
    assert row["msgs_per_cpu_s_schedstat"] > 0

    steady = SCENARIOS["steady"]
    params = {**steady.defaults, "subscribers": 4, "rate": 100, "duration_s": 0.5,
              "warmup_s": 0.1, "parse_every": 2, "timeout": 10.0}
    [row] = await run_scenario(bench, steady, params)
    assert "error" not in row, row
    assert row["lost"] == 0 and row["gaps"] == 0 and row["duplicates"] == 0
    assert row["received"] == row["expected"] == 4 * row["published"]
    assert row["samples"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    result = {"scenario": "steady", "target": steady.target, "rows": [row],
              "verdict": judge("steady", [row])}
    assert "athena/memory" in summary(result)


@pytest.mark.timeout(60)
def test_cli_travel_writes_json(tmp_path: Path) -> None:
    code = main(["travel", "--server", "athena", "--store", "memory", "--workers", "1",
                 "--set", "events=300", "--set", "batch=100", "--set", "repeats=1",
                 "--json", "--results-dir", str(tmp_path)])
    assert code == 0
    latest = json.loads((tmp_path / "latest.json").read_text())
    [row] = latest["scenarios"]["travel"]["rows"]
    assert row["server"] == "athena/memory" and row["events"] == 300 and row["complete"]


def test_close_code_parser() -> None:
    text = b"\x81\x02{}"
    close = b"\x88\x05\x0f\xa8bye"
    assert close_code(text + close) == 4008
    assert close_code(text) is None
    assert close_code(b"\x81\x7e\x01\x00" + b"x" * 256 + b"\x88\x00") == 1005


def test_latency_summary() -> None:
    samples = list(range(1, 1001))  # microseconds
    figures = latency_summary(samples)
    assert figures["p50_ms"] == 0.5 and figures["p99_ms"] == 0.99 and figures["max_ms"] == 1.0
    assert percentile([], 0.5) == 0.0


def test_ratios_say_how_much_better_athena_is() -> None:
    rows = [{"server": "athena/memory", "msgs_per_cpu_s": 2_000_000.0, "complete": True},
            {"server": "node", "msgs_per_cpu_s": 100_000.0}]
    verdict = judge("burst", rows)
    assert verdict["pass"] is True
    assert verdict["ratios"] == {"athena/memory vs node": 20.0}


def test_procstat_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1024 * 1024
