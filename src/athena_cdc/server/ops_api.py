"""The ops API: read-only JSON about the server, its channels and its connections.

``/api/stats``, ``/api/channels``, ``/api/channel``, ``/api/events`` (a travel over
HTTP) and ``/api/connections`` feed the console page (docs/console.md) and are usable
on their own. Every answer is computed when asked, from what the server keeps anyway
(counters, the log's in-memory channel state, the hub): nothing of it runs while
nobody asks.

Access: behind ``--protect-ops`` like ``/metrics`` (an ``admin`` token or the ops
key). With auth on (a JWT key configured) the API is protected even without
``--protect-ops``: unlike ``/metrics`` it shows channel names and payloads, which a
token-holding client may read only within its ``channels``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from athena_cdc import __version__
from athena_cdc.auth.guard import Guard, Refused
from athena_cdc.console.channels import ChannelIndex, ChannelRow
from athena_cdc.console.connections import connection_page
from athena_cdc.console.cursor import BadCursor
from athena_cdc.console.rates import CounterHistory
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog, StorageUnavailable, TravelQuery
from athena_cdc.metrics import Metrics
from athena_cdc.protocol.messages import MAX_CURSOR, channel_problem

if TYPE_CHECKING:
    from athena_cdc.console.pg_lag import SlotLagProbe

DEFAULT_PAGE = 50
MAX_PAGE = 500
DEFAULT_TRAVEL_PAGE = 100
MAX_TRAVEL_PAGE = 1000  # a console page of events, not a bulk export (use /ws travel)
MAX_QUERY_CHARS = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadParameter(ValueError):
    pass


class OpsApi:
    def __init__(
        self,
        *,
        log: EventLog,
        hub: Hub,
        metrics: Metrics,
        guard: Guard,
        sources: Sequence[Any],
        slow_consumer_limit: int,
    ) -> None:
        self.log = log
        self.hub = hub
        self.metrics = metrics
        self.guard = _console_guard(guard)
        self.sources = list(sources)
        self.slow_consumer_limit = slow_consumer_limit
        self.started_at = time.time()
        self.history = CounterHistory(self._counters)
        self.channels = ChannelIndex(log, hub)
        self._probes: dict[str, SlotLagProbe] = {}

    def register(self, app: web.Application) -> None:
        for path, handler in (
            ("/api/stats", self.stats),
            ("/api/channels", self.channel_list),
            ("/api/channel", self.channel),
            ("/api/events", self.events),
            ("/api/connections", self.connection_list),
        ):
            app.router.add_get(path, self._guarded(handler))
        app.on_cleanup.append(self._close_probes)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                self.guard.ops(request.headers)
            except Refused as refused:
                return _json(refused.body(), refused.status)
            try:
                return await handler(request)
            except (BadParameter, BadCursor) as exc:
                return _json({"error": "invalid_parameter", "message": str(exc)}, 400)
            except StorageUnavailable as exc:
                return _json({"error": "unavailable", "message": str(exc)}, 503)

        return guarded

    # -- /api/stats -------------------------------------------------------------------
    def _counters(self) -> tuple[float, float]:
        return float(self.metrics.appended.value), float(self.metrics.delivered.value)

    async def stats(self, request: web.Request) -> web.Response:
        sample = self.history.sample()
        points = self.history.points()
        last = points[-1] if points else None
        log_stats = self.log.stats()
        return _json(
            {
                "version": __version__,
                "started_at_ms": int(self.started_at * 1000),
                "uptime_s": round(time.time() - self.started_at, 1),
                "store": {
                    "name": self.log.name,
                    "epoch": self.log.epoch,
                    "health": self.log.health(),
                    "channels": log_stats.channels,
                    "events": log_stats.events,
                    "bytes": log_stats.bytes,
                },
                "connections": len(self.hub.connections),
                "subscriptions": self.hub.subscription_count,
                "slow_consumer_limit": self.slow_consumer_limit,
                "events": {
                    "appended": int(sample.appended),
                    "delivered": int(sample.delivered),
                    "in_per_s": None if last is None else last.in_per_s,
                    "out_per_s": None if last is None else last.out_per_s,
                },
                "history": [
                    {
                        "at_ms": p.at_ms,
                        "window_s": p.window_s,
                        "in_per_s": p.in_per_s,
                        "out_per_s": p.out_per_s,
                    }
                    for p in points
                ],
                "sources": [await self._source(source) for source in self.sources],
            },
            200,
        )

    async def _source(self, source: Any) -> dict[str, object]:
        info: dict[str, object] = {"name": source.name, "health": source.health()}
        for attr in ("rows_applied", "transactions", "reconnects", "last_commit_lsn"):
            info[attr] = getattr(source, attr, None)
        info["lag_seconds"] = getattr(source, "last_commit_lag_seconds", None)
        progress = getattr(source, "progress", None)
        if progress is not None:  # received from PostgreSQL, not yet durable in the log
            info["unapplied_bytes"] = max(0, progress.handed_end_lsn - progress.durable_end_lsn)
        dsn, settings = getattr(source, "dsn", None), getattr(source, "settings", None)
        if isinstance(dsn, str) and settings is not None:
            probe = self._probes.get(source.name)
            if probe is None:
                from athena_cdc.console.pg_lag import SlotLagProbe

                probe = self._probes[source.name] = SlotLagProbe(dsn, settings.pg_slot)
            lag = await probe.lag()
            info["lag_bytes"] = lag.lag_bytes
            info["lag_error"] = lag.error
            info["lag_checked_at_ms"] = lag.checked_at_ms
        return info

    async def _close_probes(self, app: web.Application) -> None:
        for probe in self._probes.values():
            probe.close()

    # -- /api/channels, /api/channel --------------------------------------------------
    async def channel_list(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        if len(q) > MAX_QUERY_CHARS:
            raise BadParameter(f'"q" must be at most {MAX_QUERY_CHARS} characters')
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        page = await self.channels.page(q, limit, _cursor_param(request))
        return _json(
            {
                "channels": [self._channel_json(row) for row in page.rows],
                "next_cursor": page.next_cursor,
                "known": page.known,
                "sampled_at_ms": page.taken_at_ms,
                "window_s": page.window_s,
                "snapshot_ms": page.snapshot_ms,
            },
            200,
        )

    def _channel_json(self, row: ChannelRow) -> dict[str, object]:
        return {
            "name": row.name,
            "last_seq": row.last_seq,
            "last_ts_ms": row.last_ts_ms,
            "subscribers": self.hub.subscriber_count(row.name),
            "events_per_s": row.events_per_s,
        }

    async def channel(self, request: web.Request) -> web.Response:
        name = _channel_param(request, "name")
        await self.log.refresh_bounds([name])
        bounds = self.log.bounds(name)
        newest = await self.log.read_channel(name, None, None, 1, True)
        rate = self.channels.rate(name)
        return _json(
            {
                "name": name,
                "first_seq": bounds.first_seq,
                "last_seq": bounds.last_seq,
                "retained": max(0, bounds.last_seq - bounds.first_seq + 1),
                "last_ts_ms": newest[-1].ts_ms if newest else None,
                "subscribers": self.hub.subscriber_count(name),
                "events_per_s": rate,
                "epoch": self.log.epoch,
            },
            200,
        )

    # -- /api/events ------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.Response:
        """A travel over HTTP: the same selection as a WebSocket travel, one page."""
        name = _channel_param(request, "channel")
        since_seq = _optional_int(request, "since_seq")
        since_ts_ms = _optional_int(request, "since_ts_ms")
        limit = _int_param(request, "limit", DEFAULT_TRAVEL_PAGE, 1, MAX_TRAVEL_PAGE)
        await self.log.refresh_bounds([name])
        result = await self.log.travel(TravelQuery((name,), since_seq, since_ts_ms, limit))
        return _json(
            {
                "channel": name,
                "since_seq": since_seq,
                "since_ts_ms": since_ts_ms,
                "limit": limit,
                "count": len(result.events),
                "has_more": result.has_more,
                "next_since_seq": result.events[-1].seq if result.events else since_seq,
                "gaps": [{"from_seq": g.from_seq, "to_seq": g.to_seq} for g in result.gaps],
                "epoch": self.log.epoch,
                # Each event as the WebSocket sends it, embedded without re-encoding.
                "events": [orjson.Fragment(event.message) for event in result.events],
            },
            200,
        )

    # -- /api/connections -------------------------------------------------------------
    async def connection_list(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        page = connection_page(self.hub.connections, limit, _cursor_param(request))
        return _json(
            {
                "connections": [row.as_json() for row in page.rows],
                "next_cursor": page.next_cursor,
                "total": page.total,
                "slow": page.slow,
                "slow_consumer_limit": self.slow_consumer_limit,
            },
            200,
        )


def _console_guard(guard: Guard) -> Guard:
    """The guard of the ops API: ``guard`` itself under ``--protect-ops``, and with auth
    on always protected the same way (an ``admin`` token or the ops key)."""
    if guard.protect_ops or guard.verifier is None:
        return guard
    return Guard(guard.verifier, protect_ops=True, ops_key=guard.ops_key, denials=guard.denials)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise BadParameter(f'"{name}" must be an integer from {low} to {high}, not {raw[:40]!r}')
    return max(low, min(int(raw), high))


def _optional_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_CURSOR:
        raise BadParameter(f'"{name}" must be an integer from 0 to {MAX_CURSOR}, not {raw[:40]!r}')
    return int(raw)


def _cursor_param(request: web.Request) -> str | None:
    raw = request.query.get("cursor")
    return raw or None


def _channel_param(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise BadParameter(f'"{name}" (a channel name) is required')
    problem = channel_problem(value)
    if problem is not None:
        raise BadParameter(f'"{name}" {problem}')
    return value


def _json(body: object, status: int) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
