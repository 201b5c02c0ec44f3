"""Targets and ratios: how athena-cdc did against its targets and against the baselines.

Each scenario has one *primary* figure. A ratio is always stated as "athena-cdc is N times
better than the baseline" (so > 1 means athena-cdc wins), computed from rows of the same
run: the machine is shared and noisy, so absolute figures from different runs do not
compare, ratios from one run do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]

BASELINES = ("uws", "nats", "node", "node-tuned", "aiohttp", "python")

# scenario -> (primary figure, higher is better)
PRIMARY: dict[str, tuple[str, bool]] = {
    "tenants": ("server_cpu_s", False),
    "burst": ("msgs_per_cpu_s", True),
    "steady": ("p99_ms", False),
    "spread": ("p99_ms", False),
    "travel": ("ack_ms", False),
    "idle": ("kib_per_connection", False),
    "storm": ("all_within_s", False),
    "slow": ("p99_ms_with", False),
}


def _row(rows: list[Row], server: str) -> Row | None:
    for row in rows:
        if row.get("server") == server and "error" not in row:
            return row
    return None


def ratios(scenario: str, rows: list[Row]) -> dict[str, float]:
    """``{"athena/memory vs node": 12.3, ...}`` for the scenario's primary figure."""
    figure, higher_better = PRIMARY[scenario]
    found: dict[str, float] = {}
    athenas = [
        r
        for r in rows
        if str(r.get("server", "")).startswith("athena") and isinstance(r.get(figure), int | float)
    ]
    for athena in athenas:
        via = "+ws" if str(athena["server"]).endswith("+ws") else ""
        for base in BASELINES:
            # A baseline run the same way (aiohttp+ws) is the one to compare with.
            other = (_row(rows, base + via) if via else None) or _row(rows, base)
            if other is None or not isinstance(other.get(figure), int | float):
                continue
            mine, theirs = float(athena[figure]), float(other[figure])
            if mine <= 0 or theirs <= 0:
                continue
            found[f"{athena['server']} vs {other['server']}"] = (
                mine / theirs if higher_better else theirs / mine
            )
    return found


def _tenants(rows: list[Row]) -> tuple[bool | None, str]:
    """Each publish path of athena-cdc run (HTTP, and ``+ws`` rows with ``--publish-via``)
    against the targets; uws publishes over HTTP in both."""
    verdicts = [
        (path, _tenants_via(rows, suffix))
        for path, suffix in (("HTTP", ""), ("WebSocket", "+ws"))
        if _row(rows, f"athena/memory{suffix}") is not None
    ]
    if not verdicts:
        return None, "no athena/memory row"
    if len(verdicts) == 1:
        return verdicts[0][1]
    oks = [ok for _, (ok, _) in verdicts]
    ok = None if None in oks else all(oks)
    return ok, "; ".join(f"{path} publish: {detail}" for path, (_, detail) in verdicts)


def _tenants_via(rows: list[Row], suffix: str) -> tuple[bool | None, str]:
    memory, sqlite, uws = (
        _row(rows, f"athena/memory{suffix}"),
        _row(rows, f"athena/sqlite{suffix}"),
        _row(rows, "uws"),
    )
    if memory is None:
        return None, "no athena/memory row"
    parts = [f"memory p99 {memory['p99_ms']:.2f} ms (<= 2)"]
    ok = memory["p99_ms"] <= 2 and bool(memory["complete"])
    if uws is not None:
        ratio = memory["server_cpu_s"] / uws["server_cpu_s"]
        ok &= ratio <= 1
        parts.append(f"memory CPU {ratio:.2f}x uws (<= 1)")
    if sqlite is not None:
        ratio = sqlite["server_cpu_s"] / memory["server_cpu_s"]
        held = sqlite["publish_rate"] / (memory["publish_rate"] or 1)
        ok &= ratio <= 1.5 and held >= 0.97 and sqlite["p99_ms"] <= 5 and bool(sqlite["complete"])
        parts.append(
            f"sqlite CPU {ratio:.2f}x memory (<= 1.5), rate {sqlite['publish_rate']:.0f}/s, "
            f"p99 {sqlite['p99_ms']:.2f} ms (<= 5)"
        )
    return ok, ", ".join(parts)


def _burst(rows: list[Row]) -> tuple[bool | None, str]:
    athena, node = _row(rows, "athena/memory"), _row(rows, "node")
    if athena is None or node is None:
        return None, "needs athena/memory and node rows"
    ratio = athena["msgs_per_cpu_s"] / node["msgs_per_cpu_s"]
    return ratio >= 10 and bool(athena["complete"]), f"{ratio:.1f}x node (target >= 10x)"


def _steady(rows: list[Row]) -> tuple[bool | None, str]:
    athena = _row(rows, "athena/memory")
    if athena is None:
        return None, "no athena/memory row"
    ok = athena["p50_ms"] <= 2 and athena["p99_ms"] <= 10 and athena["lost"] == 0
    return ok, (
        f"p50 {athena['p50_ms']:.2f} ms (<= 2), p99 {athena['p99_ms']:.2f} ms (<= 10), "
        f"lost {athena['lost']}"
    )


def _spread(rows: list[Row]) -> tuple[bool | None, str]:
    athena = _row(rows, "athena/memory")
    if athena is None:
        return None, "no athena/memory row"
    ok = athena["p99_ms"] <= 20 and athena["lost"] == 0 and athena["gaps"] == 0
    return ok, (
        f"p99 {athena['p99_ms']:.2f} ms (<= 20), lost {athena['lost']}, gaps {athena['gaps']}"
    )


def _travel(rows: list[Row]) -> tuple[bool | None, str]:
    memory, sqlite = _row(rows, "athena/memory"), _row(rows, "athena/sqlite")
    parts, ok = [], True
    if memory is not None:
        ok &= memory["ack_ms"] <= 150 and bool(memory["complete"])
        parts.append(f"memory {memory['ack_ms']:.0f} ms (<= 150)")
    if sqlite is not None:
        ok &= sqlite["cold_ack_ms"] <= 500 and bool(sqlite["complete"])
        parts.append(f"sqlite cold {sqlite['cold_ack_ms']:.0f} ms (<= 500)")
    return (ok if parts else None), ", ".join(parts) or "no athena row"


def _idle(rows: list[Row]) -> tuple[bool | None, str]:
    athena = _row(rows, "athena/memory")
    if athena is None:
        return None, "no athena/memory row"
    kib = athena["kib_per_connection"]
    return kib <= 30, f"{kib:.1f} KiB per connection (<= 30)"


def _storm(rows: list[Row]) -> tuple[bool | None, str]:
    athena = _row(rows, "athena/memory")
    if athena is None:
        return None, "no athena/memory row"
    within = athena["all_within_s"]
    ok = within is not None and within <= 5 and athena["failed"] == 0
    return ok, f"all subscribed within {within:.2f} s (<= 5), failed {athena['failed']}"


def _slow(rows: list[Row]) -> tuple[bool | None, str]:
    athena = _row(rows, "athena/memory")
    if athena is None:
        return None, "no athena/memory row"
    ratio = athena["p99_ratio"] or 0.0
    closed = (athena["slow_closes_metric"] or 0) >= 1 or athena["slow_close_code"] == 4008
    # The memory store keeps every event, so RSS grows in both runs: bounded means the
    # silent client adds no more than a few slow-consumer limits' worth.
    extra = athena["rss_growth_mib_with"] - athena["rss_growth_mib_without"]
    ok = ratio <= 1.2 and closed and extra <= 16
    return ok, (
        f"p99 with/without {ratio:.2f} (<= 1.2), closed 4008: {closed}, "
        f"extra RSS growth with the slow reader {extra:.1f} MiB (<= 16)"
    )


JUDGES: dict[str, Callable[[list[Row]], tuple[bool | None, str]]] = {
    "tenants": _tenants,
    "burst": _burst,
    "steady": _steady,
    "spread": _spread,
    "travel": _travel,
    "idle": _idle,
    "storm": _storm,
    "slow": _slow,
}


def judge(scenario: str, rows: list[Row]) -> dict[str, Any]:
    """``{"pass": True/False/None, "detail": "...", "ratios": {...}}``."""
    try:
        passed, detail = JUDGES[scenario](rows)
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        passed, detail = None, f"cannot judge: {type(exc).__name__}: {exc}"
    # A server that lost or duplicated deliveries (any server, baselines too) makes the
    # run's figures untrustworthy: the run fails, whatever the targets say.
    incomplete = [str(r["server"]) for r in rows if r.get("complete") is False]
    if incomplete:
        passed = False
        detail += f"; INCOMPLETE (loss or excess): {', '.join(incomplete)}"
    return {"pass": passed, "detail": detail, "ratios": ratios(scenario, rows)}
