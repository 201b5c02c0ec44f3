"""The chart: throughput bars and latency CDFs, drawn with matplotlib (Agg, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "athena/memory": "#1f77b4",
    "athena/sqlite": "#6baed6",
    "node": "#2ca02c",
    "node-tuned": "#98df8a",
    "uws": "#9467bd",
    "nats": "#ff7f0e",
    "python": "#d62728",
    "aiohttp": "#8c564b",
}


def plot(scenarios: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Draw what ``scenarios`` (name -> result) holds into one PNG; None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str]] = []
    if "burst" in scenarios:
        panels.append(("bars", "burst"))
    for name in ("steady", "spread", "storm"):
        if name in scenarios and any(r.get("cdf") for r in scenarios[name]["rows"]):
            panels.append(("cdf", name))
    if "travel" in scenarios:
        panels.append(("travel", "travel"))
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for ax, (kind, name) in zip(axes.flat, panels, strict=False):
        result = scenarios[name]
        good = [r for r in result["rows"] if "error" not in r]
        if kind == "bars":
            _bars(
                ax,
                good,
                "msgs_per_cpu_s",
                "delivered msgs per server CPU-second (log)",
                "burst: 500 subscribers x 2,000 events",
                log=True,
            )
        elif kind == "travel":
            _bars(
                ax,
                good,
                "ack_ms",
                "ms from travel request to ack",
                f"travel: replay of {result['params'].get('events', 0):,} events",
            )
        else:
            for row in good:
                points = row.get("cdf") or []
                if points:
                    ax.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        label=row["server"],
                        color=COLORS.get(row["server"]),
                    )
            ax.set_xscale("log")
            ax.set_xlabel("publish -> receive latency, ms (log)")
            ax.set_ylabel("fraction of messages")
            ax.set_title(f"{name}: latency CDF")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _bars(
    ax: Any, rows: list[dict[str, Any]], key: str, ylabel: str, title: str, log: bool = False
) -> None:
    rows = [r for r in rows if isinstance(r.get(key), int | float)]
    labels = [r["server"] for r in rows]
    values = [float(r[key]) for r in rows]
    bars = ax.bar(labels, values, color=[COLORS.get(label, "grey") for label in labels])
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
