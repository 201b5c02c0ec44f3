"""Prometheus metrics of one server, in a registry of its own.

Counters are totals; Prometheus derives per-second rates with ``rate()``. Hot paths
increment once per batch (``inc(n)``), never once per message, and the two counters
touched on every publish are :class:`HotCounter`: a plain integer, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from athena_cdc.log.base import LogStats

__all__ = ["CONTENT_TYPE", "Metrics"]

# The *_created series double the output and mean nothing for a long-running server.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.appended = HotCounter(
            "athena_cdc_events_appended", "Events appended to the log (all sources)", registry=r
        )
        self.delivered = HotCounter(
            "athena_cdc_events_delivered", "Live event messages queued to clients", registry=r
        )
        self.replayed = Counter(
            "athena_cdc_events_replayed", "Event messages sent in travel replies", registry=r
        )
        self.travel_seconds = Histogram(
            "athena_cdc_travel_seconds",
            "Time to answer a travel, from request to ack written",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            "athena_cdc_slow_consumer_closes", "Clients closed with 4008", registry=r
        )
        self.client_errors = Counter(
            "athena_cdc_client_errors", "Error messages sent to clients", ["error"], registry=r
        )
        self.auth_denied = Counter(
            "athena_cdc_auth_denied",
            "Requests refused by authentication or authorisation, by reason",
            ["reason"],
            registry=r,
        )
        self.connections_total = Counter(
            "athena_cdc_connections", "WebSocket connections accepted", registry=r
        )
        self.rejected_upgrades = Counter(
            "athena_cdc_rejected_upgrades", "WebSocket upgrades answered with 4xx", registry=r
        )
        self.publish_requests = Counter(
            "athena_cdc_publish_requests", "POST /events requests", ["status"], registry=r
        )
        self.open_connections = Gauge(
            "athena_cdc_open_connections", "Open WebSocket connections", registry=r
        )
        self.subscriptions = Gauge(
            "athena_cdc_subscriptions", "Channel subscriptions of open connections", registry=r
        )

    def watch_log(self, stats: Callable[[], LogStats]) -> None:
        """Log size gauges, from one ``stats()`` call per scrape."""
        self.registry.register(_LogCollector(stats))

    def watch_sources(self, sources: Sequence[SourceStats]) -> None:
        self.registry.register(_SourceCollector(sources))

    def gauge_from(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HotCounter(Collector):
    """A counter for the per-event path: ``inc`` adds to an int, nothing more.

    prometheus_client's ``Counter.inc`` takes a lock and goes through two method calls
    (about 1 µs): twice per single-event publish, that was ~1 % of the whole publish.
    The event loop is the only writer, so no lock is needed; a scrape reads the int.
    """

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class _LogCollector(Collector):
    def __init__(self, stats: Callable[[], LogStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        stats = self.stats()
        for name, text, value in (
            ("channels", "Channels in the log", stats.channels),
            ("events", "Events retained in the log", stats.events),
            ("bytes", "Bytes of the log (memory held, or file size)", stats.bytes),
        ):
            yield GaugeMetricFamily(f"athena_cdc_log_{name}", text, value=value)


class SourceStats(Protocol):
    """What a source exposes for metrics (plain attributes, updated by the source)."""

    name: str
    rows_applied: int
    rows_skipped: int
    rows_unroutable: int
    transactions: int
    reconnects: int
    append_failures: int
    last_commit_lag_seconds: float | None
    leader: bool


class _SourceCollector(Collector):
    """Reads the sources' counters at scrape time: nothing to update on the hot path."""

    _COUNTERS = (
        ("rows_applied", "Row changes appended to the log"),
        ("rows_skipped", "Row changes skipped (no channel for them)"),
        (
            "rows_unroutable",
            "DELETEs and channel moves of tables whose replica identity lacks "
            "the route column, handled by --pg-unroutable",
        ),
        ("transactions", "Source transactions applied"),
        ("reconnects", "Reconnections to the source"),
        ("append_failures", "Failed appends to the log (retried)"),
    )

    def __init__(self, sources: Sequence[SourceStats]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Any]:
        for attr, text in self._COUNTERS:
            family = CounterMetricFamily(f"athena_cdc_source_{attr}", text, labels=["source"])
            for source in self.sources:
                family.add_metric([source.name], getattr(source, attr))
            yield family
        lag = GaugeMetricFamily(
            "athena_cdc_source_commit_lag_seconds",
            "Last transaction: commit in the source to durable in the log",
            labels=["source"],
        )
        for source in self.sources:
            if source.last_commit_lag_seconds is not None:
                lag.add_metric([source.name], source.last_commit_lag_seconds)
        yield lag
        leader = GaugeMetricFamily(
            "athena_cdc_source_leader",
            "1 while this process streams the source (leads its slot), else 0 (standby)",
            labels=["source"],
        )
        for source in self.sources:
            leader.add_metric([source.name], 1 if source.leader else 0)
        yield leader
