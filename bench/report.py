"""Reporting: the table printed after a run, and the JSON files under ``bench/results/``.

``<scenario>-<timestamp>.json`` keeps everything a run measured; ``latest.json`` keeps,
per scenario, the most recent result (merged, so running one scenario updates only its
entry). The chart is drawn by :mod:`bench.charts` from ``latest.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

Result = dict[str, Any]

# Paced scenarios (steady, spread) report the same latency and load figures.
LATENCY_COLUMNS = [
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "publish_rate",
    "lost",
    "excess",
    "gaps",
    "complete",
    "server_cpu_pct",
    "client_cpu_s",
    "machine_busy_pct",
    "softirq_pct",
]

COLUMNS: dict[str, list[str]] = {
    "tenants": [
        "server_cpu_s",
        "us_per_publish",
        "p50_ms",
        "p99_ms",
        "publish_rate",
        "wall_s",
        "ack_p99_ms",
        "lost",
        "excess",
        "complete",
        "client_cpu_s",
        "producer_cpu_s",
        "machine_busy_pct",
        "softirq_pct",
    ],
    "burst": [
        "msgs_per_cpu_s",
        "best_msgs_per_cpu_s",
        "msgs_per_cpu_s_schedstat",
        "server_cpu_s",
        "wall_s",
        "msgs_per_wall_s",
        "client_cpu_s",
        "lost",
        "excess",
        "complete",
        "machine_busy_pct",
        "softirq_pct",
    ],
    "steady": LATENCY_COLUMNS,
    "spread": LATENCY_COLUMNS,
    "travel": [
        "ack_ms",
        "first_event_ms",
        "best_ack_ms",
        "cold_ack_ms",
        "cold_first_event_ms",
        "events",
        "complete",
        "run_machine_busy_pct",
    ],
    "idle": [
        "connections",
        "rss_before_mib",
        "rss_after_mib",
        "kib_per_connection",
        "run_server_cpu_s",
        "run_machine_busy_pct",
    ],
    "storm": [
        "subscribed",
        "failed",
        "p50_ms",
        "p99_ms",
        "all_within_s",
        "run_server_cpu_s",
        "run_machine_busy_pct",
    ],
    "slow": [
        "p99_ms_without",
        "p99_ms_with",
        "p99_ratio",
        "p99_ratios",
        "slow_closes_metric",
        "slow_close_code",
        "rss_growth_mib_without",
        "rss_growth_mib_with",
        "lost",
        "complete",
        "run_server_cpu_s",
        "run_machine_busy_pct",
    ],
}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }


def fmt(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 10_000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if isinstance(value, int):
        return str(value) if column.endswith("code") else f"{value:,}"
    return str(value)


def table(result: Result, markdown: bool = False) -> str:
    """The rows of one scenario as an aligned text (or Markdown) table."""
    name = result["scenario"]
    columns = ["server", *COLUMNS.get(name, [])]
    cells = [
        [fmt(row.get(c), c) if "error" not in row or c == "server" else "" for c in columns]
        for row in result["rows"]
    ]
    for cell, row in zip(cells, result["rows"], strict=True):
        if "error" in row:
            cell[1] = "error: " + str(row["error"])[:70]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(columns[i]), *(len(c[i]) for c in cells)) for i in range(len(columns))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def summary(result: Result, markdown: bool = False) -> str:
    """Header, table, verdict and ratios of one scenario."""
    verdict = result["verdict"]
    mark = {True: "PASS", False: "FAIL", None: "n/a"}[verdict["pass"]]
    ratios = ", ".join(f"{k}: {v:.2f}x" for k, v in verdict["ratios"].items()) or "-"
    title = f"## {result['scenario']}" if markdown else f"== {result['scenario']} =="
    return (
        f"{title}\ntarget: {result['target']}\n\n{table(result, markdown)}\n\n"
        f"verdict: {mark} - {verdict['detail']}\nathena-cdc vs baselines "
        f"(>1 = athena-cdc better): {ratios}\n"
    )


def save(results: list[Result], folder: Path) -> list[Path]:
    """Write one JSON file per scenario and merge them into ``latest.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    written = []
    for result in results:
        path = folder / f"{result['scenario']}-{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        written.append(path)
    latest_path = folder / "latest.json"
    latest: dict[str, Any] = {}
    if latest_path.exists():
        try:
            latest = json.loads(latest_path.read_text())
        except ValueError:
            latest = {}
    scenarios = latest.setdefault("scenarios", {})
    for result in results:
        scenarios[result["scenario"]] = result
    latest["updated"] = stamp
    latest_path.write_text(json.dumps(latest, indent=1, default=str))
    written.append(latest_path)
    return written


def stamp_result(
    name: str,
    target: str,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    verdict: dict[str, Any],
) -> Result:
    return {
        "scenario": name,
        "target": target,
        "params": params,
        "rows": rows,
        "verdict": verdict,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
    }
