"""The server: wires log, hub, sources and HTTP/WebSocket endpoints on one port.

It owns no business rules; it builds the parts from :class:`Settings`, starts them
in order (log, hub, endpoints, sources) and stops them in reverse, draining on the
way: stop accepting, close clients with 1001, stop sources, flush the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from athena_cdc.auth.guard import DenialLog, Guard
from athena_cdc.config import Settings
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog
from athena_cdc.log.memory import MemoryLog
from athena_cdc.log.redis_url import is_redis_store, safe_url
from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import close_codes
from athena_cdc.server.console import ConsolePage
from athena_cdc.server.deadlines import Deadlines, DeadlineTCPSite
from athena_cdc.server.http_errors import JsonErrorAppRunner
from athena_cdc.server.limits import ConnectionLimits, quiet_accept_errors
from athena_cdc.server.ops import HealthCheck, OpsEndpoints
from athena_cdc.server.ops_api import OpsApi
from athena_cdc.server.publish_lane import PublishLane
from athena_cdc.server.websocket import MAX_MESSAGE_BYTES, WebSocketEndpoint
from athena_cdc.sources.http_publish import MAX_BODY_BYTES, PublishEndpoint

if TYPE_CHECKING:
    from athena_cdc.log.remote import OwnerLink
    from athena_cdc.server.workers import WorkerRole

log = logging.getLogger(__name__)


class TlsConfigError(Exception):
    """The certificate or key cannot be used; the message says which and why."""


class Source(Protocol):
    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> str | None: ...
    def role(self) -> str: ...


def make_log(settings: Settings, owner: OwnerLink | None = None) -> EventLog:
    """The store of ``settings``; a worker of ``--workers N`` (``owner``: its link to the
    supervisor) reaches the memory or sqlite store through the supervisor."""
    if owner is not None and settings.store in ("memory", "sqlite"):
        from athena_cdc.log.remote import RemoteLog

        return RemoteLog(owner, retention_events=settings.retention_events)
    if settings.store == "memory":
        return MemoryLog(
            retention_events=settings.retention_events,
            retention_age=settings.retention_age,
            memory_limit=settings.memory_limit,
        )
    if is_redis_store(settings.store):
        from athena_cdc.log.redis import RedisLog
        from athena_cdc.log.redis_cluster import RedisClusterLog
        from athena_cdc.log.redis_url import is_cluster

        return (RedisClusterLog if is_cluster(settings.store) else RedisLog)(
            settings.store,
            retention_events=settings.retention_events,
            retention_age=settings.retention_age,
            durability=settings.redis_durability,
            cache_bytes=settings.redis_cache_bytes,
        )
    return SqliteLog(
        settings.data_dir,
        retention_events=settings.retention_events,
        retention_age=settings.retention_age,
        memory_limit=settings.memory_limit,
        synchronous=settings.sqlite_synchronous,
        commit_interval=settings.sqlite_commit_interval,
        on_damage=settings.on_damage,
    )


def make_sources(settings: Settings, event_log: EventLog, metrics: Metrics) -> list[Source]:
    if not settings.source:
        return []
    from athena_cdc.sources.postgres import PostgresSource

    sources = [PostgresSource(dsn, settings, event_log) for dsn in settings.source]
    metrics.watch_sources(sources)
    return list(sources)


class AthenaServer:
    def __init__(self, settings: Settings, worker: WorkerRole | None = None) -> None:
        self.settings = settings
        self.worker = worker  # one of --workers N processes, else None
        self.metrics = Metrics()
        self.log = make_log(settings, worker.link if worker else None)
        self.hub = Hub(self.metrics)
        self.guard = Guard.from_settings(
            settings, DenialLog(lambda reason: self.metrics.auth_denied.labels(reason).inc())
        )
        self.sources: list[Source] = []
        self.websocket = WebSocketEndpoint(
            self.log,
            self.hub,
            self.metrics,
            slow_consumer_limit=settings.slow_consumer_limit,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            rate_limit=settings.client_rate_limit,
            publish_rate_limit=settings.publish_rate_limit,
            guard=self.guard,
            max_subscriptions=settings.max_subscriptions,
        )
        self.limits = ConnectionLimits(settings.max_connections, settings.max_connections_per_ip)
        self.deadlines = Deadlines(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            tls_handshake_timeout=settings.tls_handshake_timeout,
        )
        self._runner: web.AppRunner | None = None
        self._publish_lane: PublishLane | None = None
        self._site: web.TCPSite | None = None
        self.port = settings.port

    def _build_app(self) -> web.Application:
        checks: dict[str, HealthCheck] = {"log": self.log.health}
        for source in self.sources:
            checks[source.name] = source.health
        if self.worker is not None and self.settings.source:  # run by the supervisor
            checks["sources"] = self.worker.link.source_health
        roles = {source.name: source.role for source in self.sources}
        ops = OpsEndpoints(self.metrics, checks, self.guard, roles)
        publish = PublishEndpoint(self.log, self.metrics, self.guard)
        # The body limit is checked by the publish endpoint itself (JSON error); this
        # one only stops aiohttp from buffering anything larger.
        app = web.Application(
            client_max_size=MAX_BODY_BYTES + MAX_MESSAGE_BYTES, middlewares=[json_http_errors]
        )
        app.router.add_get("/ws", self.limits.guard(self.websocket.handle))
        app.router.add_post("/events", publish.handle, expect_handler=publish.expect)
        app.router.add_get("/health", ops.health)
        app.router.add_get("/ready", ops.ready)
        app.router.add_get("/metrics", ops.metrics_page)
        if self.worker is not None:
            app.on_response_prepare.append(self.worker.name_response)
        self._add_console(app)
        # The lane answers as this app would: only with these middlewares and hooks.
        if (
            self.settings.publish_lane
            and tuple(app.middlewares) == (json_http_errors,)
            and len(app.on_response_prepare) == (self.worker is not None)
        ):
            self._publish_lane = PublishLane(
                publish, self.worker.response_headers if self.worker is not None else {}
            )
        return app

    def _add_console(self, app: web.Application) -> None:
        """The ops console: its page and its read-only API (docs/console.md)."""
        ConsolePage().register(app)
        OpsApi(
            log=self.log,
            hub=self.hub,
            metrics=self.metrics,
            guard=self.guard,
            sources=self.sources,
            slow_consumer_limit=self.settings.slow_consumer_limit,
        ).register(app)

    def _wire_metrics(self) -> None:
        m = self.metrics
        m.gauge_from(m.open_connections, lambda: len(self.hub.connections))
        m.gauge_from(m.subscriptions, lambda: self.hub.subscription_count)
        m.watch_log(self.log.stats)
        if self.worker is not None and self.settings.source:
            m.watch_sources(self.worker.link.sources)  # as the supervisor reports them

    async def start(self) -> None:
        await self.log.open()
        self.log.add_listener(self.hub.on_append)
        if self.log.shared:
            self._wire_shared_log()
        self.log.add_listener(lambda events: self.metrics.appended.inc(len(events)))
        # A worker's sources run in its supervisor: exactly one reader per slot.
        if self.worker is None:
            self.sources = make_sources(self.settings, self.log, self.metrics)
        self._wire_metrics()
        quiet_accept_errors(asyncio.get_running_loop())
        app = self._build_app()  # before the runner: it decides the publish lane
        self._runner = JsonErrorAppRunner(
            app,
            deadlines=self.deadlines,
            # Plain publishes skip aiohttp's per-request machinery (the same answers).
            publish_lane=self._publish_lane,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.settings.shutdown_timeout,
            # After an early 413, read and drop the rest of the body for at most 1 s
            # (so the client sees the answer), not aiohttp's default 10 s.
            lingering_time=1.0,
        )
        await self._runner.setup()
        self._site = DeadlineTCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            backlog=8192,
            reuse_address=True,
            reuse_port=self.worker is not None,  # the workers share the port
            ssl_context=self._tls_context(),
            tls_handshake_timeout=self.deadlines.tls_handshake_timeout,
        )
        await self._site.start()
        server: Any = self._site._server  # the asyncio.Server, for the bound port
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        for source in self.sources:
            await source.start()
        if self.worker is not None:
            self.worker.link.ready(self.worker.index)
        log.info(
            "athena-cdc listening on %s://%s:%d/ws (store: %s%s)",
            "wss" if self.settings.tls_cert else "ws",
            self.settings.host,
            self.port,
            safe_url(self.settings.store),  # no Redis password
            f", data dir: {self.settings.data_dir}" if self.settings.store == "sqlite" else "",
        )

    def _wire_shared_log(self) -> None:
        from athena_cdc.log.redis import RedisLog

        if isinstance(self.log, RedisLog):
            # Tail checks only for channels someone here listens to.
            self.log.interest = self.hub.has_subscribers
            self.log.on_epoch_change = self._epoch_changed

    def _epoch_changed(self, epoch: str) -> None:
        """The shared log lost its data and starts over: clients must start over too."""
        self.hub.close_all(
            close_codes.EPOCH_CHANGED,
            f"the event log starts over under epoch {epoch}: reconnect and subscribe again",
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        """TLS for wss:// and https:// when a certificate is configured.

        Frames are still built once: the TLS transport encrypts each connection's
        coalesced write, so fan-out costs one encryption per client per tick.
        """
        if self.settings.tls_cert is None or self.settings.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load --tls-cert {self.settings.tls_cert} / --tls-key "
                f"{self.settings.tls_key}: {exc}"
            ) from None
        return context

    async def stop(self) -> None:
        """Drain: refuse new clients, close the others with 1001, flush the log."""
        log.info("shutting down: closing %d connections", len(self.hub.connections))
        self.websocket.begin_drain()
        if self._site is not None:
            await self._site.stop()
        await self.websocket.answer_publishes(self.settings.shutdown_timeout)
        self.hub.close_all(close_codes.SHUTDOWN, close_codes.SHUTDOWN_REASON)
        for source in self.sources:
            try:
                await source.stop()
            except Exception:
                log.exception("stopping source %s failed", source.name)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.log.close()
        log.info("stopped")


@web.middleware
async def json_http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The router's 404 and 405 in the same JSON form as every other error of the server
    (the endpoints answer their own errors in JSON already)."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        body = {"error": exc.reason, "message": f"{request.method} {request.path}: {exc.reason}."}
        response = web.Response(
            body=orjson.dumps(body), status=exc.status, content_type="application/json"
        )
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


async def serve(settings: Settings, stop: asyncio.Event, worker: WorkerRole | None = None) -> None:
    """Run until ``stop`` is set, then drain."""
    server = AthenaServer(settings, worker)
    await server.start()
    # Everything allocated so far (modules, the app) lives as long as the process: keep it
    # out of the collector's way, so that a full collection scans only what requests make.
    gc.freeze()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, server.guard.reload)  # rotate JWKS keys
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await server.stop()
