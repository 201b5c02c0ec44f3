"""Summaries of latency samples: percentiles and a down-sampled CDF for the charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def percentile(ordered: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def latency_summary(samples_us: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in milliseconds, and the sample count."""
    ordered = sorted(samples_us)
    count = len(ordered)
    return {
        "samples": count,
        "p50_ms": percentile(ordered, 0.50) / 1000,
        "p90_ms": percentile(ordered, 0.90) / 1000,
        "p99_ms": percentile(ordered, 0.99) / 1000,
        "p999_ms": percentile(ordered, 0.999) / 1000,
        "max_ms": (ordered[-1] / 1000) if ordered else 0.0,
        "mean_ms": (sum(ordered) / count / 1000) if count else 0.0,
    }


def cdf_points(samples_us: Sequence[int], points: int = 300) -> list[tuple[float, float]]:
    """``(latency_ms, fraction <= it)`` at about ``points`` quantiles, tail included."""
    ordered = sorted(samples_us)
    if not ordered:
        return []
    count = len(ordered)
    ranks = {min(count - 1, int(count * i / points)) for i in range(points)}
    # Resolve the tail finely: that is where the servers differ.
    ranks |= {min(count - 1, int(count * (1 - 10 ** -(k / 10)))) for k in range(10, 41)}
    ranks.add(count - 1)
    return [(ordered[r] / 1000, (r + 1) / count) for r in sorted(ranks)]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def completeness(stats: dict[str, Any], expected: int, complete: bool) -> dict[str, Any]:
    """Every client's count against its channel's: a run that lost or repeated one fails."""
    return {
        "expected": expected,
        "received": stats["received"],
        "lost": max(0, expected - stats["received"]),
        "excess": max(0, stats["received"] - expected),
        "clients_short": stats["clients_short"],
        "clients_excess": stats["clients_excess"],
        "gaps": stats["gaps"],
        "duplicates": stats["duplicates"],
        "complete": complete and stats["clients_short"] == stats["clients_excess"] == 0,
    }
