"""``GET /ws``: the WebSocket side of the protocol.

The handler reads client messages one at a time, so travels on one connection are
answered in the order asked. Everything it sends goes through the connection's
queue (see :mod:`athena_cdc.hub.connection`), which keeps the order of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from aiohttp import WSMsgType, web

from athena_cdc import slicing
from athena_cdc.auth.guard import KEY_HEADER, Guard, Refused
from athena_cdc.auth.tokens import TokenRejected
from athena_cdc.hub.connection import Connection
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog, StorageUnavailable, TravelQuery
from athena_cdc.logging_limits import RateLimitedLog
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import close_codes
from athena_cdc.protocol import messages as m
from athena_cdc.protocol.handshake import (
    CLIENT_HEADER,
    WEBSOCKET_VERSION,
    HandshakeRejected,
    client_name,
    handshake_header_problem,
    unsupported_websocket_version,
)
from athena_cdc.server.frame_guard import GuardedWebSocketResponse
from athena_cdc.server.keepalive import KeepAlive
from athena_cdc.server.rate_limit import RateLimiter
from athena_cdc.slicing import TimeSlice
from athena_cdc.sources.http_publish import raw_header
from athena_cdc.sources.ws_publish import ConnectionPublisher

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)  # one bug, hit by every client, is one record a second

MAX_MESSAGE_BYTES = 64 * 1024
YIELD_EVERY_MESSAGES = 16  # messages read from one client between turns of the event loop
_CLOSED = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED))
# What was already written before the expiry may still be read for this long, then the
# socket is dropped: no one reads on for long on a token that has expired.
TOKEN_EXPIRED_GRACE_S = 1.0


class WebSocketEndpoint:
    def __init__(
        self,
        event_log: EventLog,
        hub: Hub,
        metrics: Metrics,
        *,
        slow_consumer_limit: int,
        ping_interval: float,
        ping_timeout: float = 45.0,
        rate_limit: float | None = None,
        publish_rate_limit: float | None = None,
        guard: Guard | None = None,
        max_subscriptions: int | None = None,
    ) -> None:
        self.guard = guard or Guard()
        self.log = event_log
        self.hub = hub
        self.metrics = metrics
        self.slow_consumer_limit = slow_consumer_limit
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.rate_limit = rate_limit
        self.publish_rate_limit = publish_rate_limit
        self.max_subscriptions = max_subscriptions
        self.accepting = True
        # Every open connection's publisher, so that a drain can answer their publishes.
        self.publishers: set[ConnectionPublisher] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        version = unsupported_websocket_version(request.headers)
        if version is not None:
            self.metrics.rejected_upgrades.inc()
            return web.json_response(
                {
                    "error": "Unsupported WebSocket version",
                    "message": f"This server speaks WebSocket version {WEBSOCKET_VERSION} "
                    f"(RFC 6455); the upgrade asked for version {version!r}.",
                    "hint": f"Send 'Sec-WebSocket-Version: {WEBSOCKET_VERSION}' (any current "
                    "WebSocket client does).",
                },
                status=426,
                headers={"Sec-WebSocket-Version": WEBSOCKET_VERSION},
                dumps=_dumps,
            )
        problem = handshake_header_problem(request.headers)
        if problem is not None:
            self.metrics.rejected_upgrades.inc()
            return _invalid_upgrade(problem)
        try:
            name = client_name(request.headers.get(CLIENT_HEADER), request.rel_url.raw_query_string)
        except HandshakeRejected as rejected:
            self.metrics.rejected_upgrades.inc()
            return web.json_response(rejected.body(), status=400, dumps=_dumps)
        try:
            grant = self.guard.upgrade(request.headers, request.query.get("token"), name)
        except Refused as refused:
            self.metrics.rejected_upgrades.inc()
            return web.json_response(refused.body(), status=refused.status, dumps=_dumps)
        if not self.accepting:
            return web.json_response(
                {
                    "error": "Shutting down",
                    "message": "The server is shutting down.",
                    "hint": "Reconnect in a moment, to this or another node.",
                },
                status=503,
                dumps=_dumps,
            )
        ws = GuardedWebSocketResponse(
            compress=False,  # frames must be the same bytes for every subscriber
            # Pings are answered by _serve, so that they count against the rate limit;
            # the keep-alive is KeepAlive's, which counts any byte as a sign of life.
            autoping=False,
            heartbeat=None,
            max_msg_size=MAX_MESSAGE_BYTES + 1,  # aiohttp refuses sizes >= this value
            # Text stays bytes: orjson checks UTF-8 as it parses (see _on_text).
            decode_text=False,
        )
        try:
            ready = ws.can_prepare(request).ok
        except ValueError:  # aiohttp failing on a value it did not expect (was a 500)
            ready = False
        if not ready:
            self.metrics.rejected_upgrades.inc()
            if request.headers.get("Upgrade", "").strip().lower() == "websocket":
                # An upgrade, but a broken one (no 'Connection: Upgrade', a key that is
                # not 16 bytes of base64, ...): aiohttp would answer in plain text.
                return _invalid_upgrade(
                    "The upgrade request is not a valid WebSocket opening handshake "
                    "(RFC 6455 section 4.1)."
                )
            return web.json_response(
                {
                    "error": "WebSocket upgrade required",
                    "message": "GET /ws must be a WebSocket upgrade request.",
                    "hint": "Connect with a WebSocket client to ws://<host>:<port>/ws.",
                },
                status=426,
                dumps=_dumps,
            )
        writer = await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        conn = Connection(
            name,
            transport,
            limit=self.slow_consumer_limit,
            on_dirty=self.hub.mark_dirty,
            on_slow=lambda _: self.metrics.slow_consumer_closes.inc(),
            ws=ws,
            drain=writer.drain,
        )
        ws.before_close = conn.flush
        guard = ws.guard
        assert guard is not None
        keepalive = KeepAlive(
            transport,
            lambda: guard.last_heard,
            interval=self.ping_interval,
            timeout=self.ping_timeout,
            on_silent=lambda silent: _drop_silent(conn, transport, silent),
        )
        conn.grant = grant
        publisher = ConnectionPublisher(
            conn,
            self.log,
            self.guard,
            self.metrics,
            # A producer's publish key comes with the upgrade, as the header POST takes.
            key_matches=self.guard.publish_key is not None
            and self.guard.publish_key_matches(raw_header(request, KEY_HEADER)),
            rate_limit=self.publish_rate_limit,
        )
        self._arm_expiry(conn)
        self.metrics.connections_total.inc()
        self.hub.add(conn)
        self.publishers.add(publisher)
        try:
            # Subscribe and queue "subscribed" in one step: no event can slip between.
            self.hub.subscribe(conn, name)
            conn.send(
                m.subscribed_message(
                    name, epoch=self.log.epoch, expires_at_ms=self._expires_at(conn)
                )
            )
            await self._serve(ws, conn, publisher)
        finally:
            keepalive.stop()
            # Appends already started still finish (their answers go nowhere).
            self.publishers.discard(publisher)
            await publisher.settle()
            if conn.expiry is not None:
                conn.expiry.cancel()
            self.hub.remove(conn)
        return ws

    def begin_drain(self) -> None:
        """Shutting down: refuse new connections, and new publishes on open ones."""
        self.accepting = False
        for publisher in self.publishers:
            publisher.draining = True

    async def answer_publishes(self, within: float) -> None:
        """Wait (at most ``within`` seconds) until every publish begun is appended and its
        answer queued, so that the close frame follows the answers: a producer told
        nothing cannot know that its events were stored, and would publish them
        again (with a commit interval, SIGTERM found appends waiting every time)."""
        waits = [asyncio.ensure_future(p.settle()) for p in self.publishers]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=within)
        for wait in late:
            wait.cancel()
        if late:
            log.warning(
                "shutting down: %d connections' publishes not answered within %gs",
                len(late),
                within,
            )

    async def _serve(
        self, ws: web.WebSocketResponse, conn: Connection, publisher: ConnectionPublisher
    ) -> None:
        limiter = RateLimiter(self.rate_limit) if self.rate_limit else None
        since_yield = 0
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind in _CLOSED:
                return
            if kind is WSMsgType.ERROR:
                # aiohttp has sent the close frame (1002, 1007 or 1009) and drops the socket.
                log.debug("client %r: %s", conn.client_id, msg.data)
                continue
            if conn.closing:
                continue  # closing: read on until the close handshake ends
            since_yield += 1
            if since_yield == YIELD_EVERY_MESSAGES:
                # Queued messages are read without a pause: let other clients' work
                # (and live events) through now and then.
                since_yield = 0
                await asyncio.sleep(0)
            if kind is WSMsgType.TEXT:
                await self._on_text(conn, msg.data, limiter, publisher)
                continue
            # Every frame counts, control frames too (text frames in _on_text); a ping
            # over the rate is dropped unanswered (the peer gets its pong once it slows).
            allowed = limiter is None or limiter.allow()
            if kind is WSMsgType.PING:
                if allowed:
                    with contextlib.suppress(ConnectionError):
                        await ws.pong(msg.data)
                continue
            if kind is WSMsgType.PONG:
                continue  # its arrival was noted by the frame guard (keep-alive)
            if not allowed:
                self._rate_limited(conn)
                continue
            if kind is WSMsgType.BINARY:
                self._error(
                    conn,
                    m.ProtocolError(
                        "invalid_message", "Binary frames are not accepted; send JSON text frames."
                    ),
                )

    def _rate_limited(self, conn: Connection) -> None:
        self._error(
            conn,
            m.ProtocolError(
                "rate_limited", f"Too many messages; at most {self.rate_limit:g} per second."
            ),
        )

    async def _on_text(
        self,
        conn: Connection,
        data: bytes | str,
        limiter: RateLimiter | None,
        publisher: ConnectionPublisher,
    ) -> None:
        # Parsed before the rate check: publish messages are counted apart, in events
        # (a frame is at most MAX_MESSAGE_BYTES, so parsing one is bounded work).
        try:
            message = m.parse_client_message(data)
        except m.ProtocolError as error:
            if limiter is not None and not limiter.allow():
                self._rate_limited(conn)
                return
            if error.code == "invalid_json" and not _is_utf8(data):
                # RFC 6455 §8.1: text that is not UTF-8 fails the connection with 1007.
                # (orjson refused it while parsing: the check costs nothing on valid text.)
                conn.flush()  # replies already queued go out first
                conn.close(close_codes.INVALID_TEXT, close_codes.INVALID_TEXT_REASON)
                return
            self._error(conn, error)
            return
        if isinstance(message, m.Publish):
            try:
                publisher.submit(message, len(data))
            except Exception:
                failures.exception("client %r: publishing failed", conn.client_id)
                self._error(conn, m.ProtocolError("internal_error", "The server failed to answer."))
                return
            if publisher.full:
                await publisher.wait_for_room()
            return
        if limiter is not None and not limiter.allow():
            self._rate_limited(conn)
            return
        try:
            await self._act(conn, message)
        except Exception:
            # A bug must not cost the client its connection, nor its place in the stream.
            failures.exception("client %r: handling %r failed", conn.client_id, message)
            self._error(conn, m.ProtocolError("internal_error", "The server failed to answer."))

    async def _act(self, conn: Connection, message: m.ClientMessage) -> None:
        if isinstance(message, m.Travel):
            if message.organization_id and not conn.grant.read.covers(message.organization_id):
                self._forbidden(conn, message.organization_id)
                return
            await self._travel(conn, message)
        elif isinstance(message, m.Subscribe):
            if not conn.grant.read.covers(message.organization_id):
                self._forbidden(conn, message.organization_id)
                return
            if self._subscriptions_full(conn, message.organization_id):
                self._error(
                    conn,
                    m.ProtocolError(
                        "limit_exceeded",
                        f"Not subscribed to {message.organization_id!r}: at most "
                        f"{self.max_subscriptions} subscriptions per connection "
                        "(--max-subscriptions); unsubscribe from a channel first, "
                        "or open another connection.",
                    ),
                )
                return
            self.hub.subscribe(conn, message.organization_id)
            conn.send(
                m.subscribed_message(
                    conn.client_id,
                    message.organization_id,
                    epoch=self.log.epoch,
                    expires_at_ms=self._expires_at(conn),
                )
            )
        elif isinstance(message, m.Unsubscribe):
            self.hub.unsubscribe(conn, message.organization_id)
            conn.send(m.unsubscribed_message(conn.client_id, message.organization_id))
        elif isinstance(message, m.Refresh):
            self._refresh(conn, message.token)
        else:
            conn.send(m.PONG_MESSAGE)

    # -- authorisation (see athena_cdc.auth.guard) ------------------------------------
    def _forbidden(self, conn: Connection, channel: str) -> None:
        self.guard.forbidden_channel(channel)
        self.metrics.client_errors.labels("forbidden").inc()
        conn.send(m.forbidden_message(channel))

    def _refresh(self, conn: Connection, token: str) -> None:
        """Replace the token in force; drop the channels the new one does not cover."""
        if not self.guard.enabled:
            self._error(
                conn,
                m.ProtocolError(
                    "auth_disabled", "This server has no authentication: nothing to refresh."
                ),
            )
            return
        try:
            grant = self.guard.refresh(token)
        except TokenRejected as exc:
            # The old token stays in force (and its expiry timer keeps running).
            self._error(conn, m.ProtocolError("unauthorized", f"Invalid token: {exc}."))
            return
        conn.grant = grant
        self._arm_expiry(conn)
        for channel in sorted(conn.channels):
            if not grant.read.covers(channel):
                self.hub.unsubscribe(conn, channel)
                conn.send(m.unsubscribed_message(conn.client_id, channel, reason="forbidden"))
        conn.send(m.refreshed_message(grant.expires_at_ms))

    def _expires_at(self, conn: Connection) -> int | None:
        return conn.grant.expires_at_ms if self.guard.enabled else None

    def _arm_expiry(self, conn: Connection) -> None:
        """One timer per connection: close with 1008 the moment its token expires."""
        if not self.guard.enabled:
            return
        if conn.expiry is not None:
            conn.expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = conn.grant.expires_at_ms / 1000 - time.time()
        conn.expiry = loop.call_later(max(0.0, delay), self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        conn.expiry = None
        self.metrics.client_errors.labels("token_expired").inc()
        conn.close(
            close_codes.TOKEN_EXPIRED,
            close_codes.TOKEN_EXPIRED_REASON,
            max_grace=TOKEN_EXPIRED_GRACE_S,
        )

    def _subscriptions_full(self, conn: Connection, channel: str) -> bool:
        """Whether subscribing to ``channel`` would pass ``--max-subscriptions`` (each
        subscription costs the hub memory and makes a travel without a channel longer)."""
        limit = self.max_subscriptions
        return limit is not None and channel not in conn.channels and len(conn.channels) >= limit

    def _error(self, conn: Connection, error: m.ProtocolError) -> None:
        self.metrics.client_errors.labels(error.code).inc()
        conn.send(error.to_message())

    async def _travel(self, conn: Connection, travel: m.Travel) -> None:
        started = time.perf_counter()
        channels = (
            (travel.organization_id,) if travel.organization_id else tuple(sorted(conn.channels))
        )
        conn.hold()
        time_slice = TimeSlice()
        slicing.job_started()
        try:
            # Events after these seqs are held for this connection and follow the ack.
            try:
                until = await self._newest_seqs(conn, channels, time_slice)
            except StorageUnavailable as exc:
                self._error(conn, m.ProtocolError("unavailable", f"Travel failed: {exc}"))
                return
            query = TravelQuery(channels, travel.since_seq, travel.since_ts_ms, travel.limit, until)
            reader = self.log.travel_reader(query)
            reader.slice = time_slice
            try:
                # Each page is written (and drained) before the next is read.
                async with contextlib.aclosing(reader.pages()) as pages:
                    async for page in pages:
                        await conn.write_bulk([event.frame for event in page], time_slice)
            except StorageUnavailable as exc:
                # Events already sent stay sent; the error takes the ack's place.
                self._error(conn, m.ProtocolError("unavailable", f"Travel failed: {exc}"))
                return
            conn.send(
                m.travel_complete_message(
                    travel,
                    count=reader.count,
                    has_more=reader.has_more,
                    gaps=[
                        {"organization_id": g.channel, "from_seq": g.from_seq, "to_seq": g.to_seq}
                        for g in reader.gaps
                    ],
                    epoch=self.log.epoch,
                )
            )
            self.metrics.replayed.inc(reader.count)
            self.metrics.travel_seconds.observe(time.perf_counter() - started)
        except ConnectionError:
            pass  # the client went away mid-reply
        finally:
            slicing.job_done()
            conn.release()

    async def _newest_seqs(
        self, conn: Connection, channels: tuple[str, ...], time_slice: TimeSlice
    ) -> dict[str, int]:
        """Each channel's newest seq when the hold began: the travel returns nothing
        newer, so what follows comes live, once. Thousands of channels take a few loop
        turns to look up; events appended meanwhile are already held, so each channel
        ends before its first held event."""
        # A shared log first delivers what this process has not heard yet (events it
        # finds are held like any live event), so that its bounds are current.
        await self.log.refresh_bounds(channels)
        until: dict[str, int] = {}
        for number, channel in enumerate(channels, 1):
            until[channel] = self.log.bounds(channel).last_seq
            if number % 256 == 0:
                await time_slice.pause()
        for channel, first_held in conn.first_held_seqs().items():
            if channel in until:
                until[channel] = min(until[channel], first_held - 1)
        return until


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def _invalid_upgrade(message: str) -> web.Response:
    return web.json_response(
        {
            "error": "Invalid WebSocket upgrade",
            "message": message,
            "hint": "Send 'Connection: Upgrade' and a 'Sec-WebSocket-Key' of 16 random bytes "
            "in base64, as any WebSocket client does.",
        },
        status=400,
        dumps=_dumps,
    )


def _is_utf8(data: bytes | str) -> bool:
    if isinstance(data, str):
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _drop_silent(conn: Connection, transport: asyncio.Transport, silent: float) -> None:
    """A peer silent past --ping-timeout is presumed gone: no close handshake, just drop."""
    log.info("dropping client %r: nothing received for %.0f s", conn.client_id, silent)
    transport.abort()
