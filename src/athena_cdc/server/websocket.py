"""``GET /ws``: the WebSocket side of the protocol.

The handler reads client messages one at a time, so travels on one connection are
answered in the order asked. Everything it sends goes through the connection's
queue (see :mod:`athena_cdc.hub.connection`), which keeps the order of messages.
"""

from __future__ import annotations

import contextlib
import logging
import time

import orjson
from aiohttp import WSMsgType, web

from athena_cdc import slicing
from athena_cdc.hub.connection import Connection
from athena_cdc.hub.hub import Hub
from athena_cdc.log.base import EventLog, StorageUnavailable, TravelQuery
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import messages as m
from athena_cdc.protocol.handshake import CLIENT_HEADER, HandshakeRejected, client_name
from athena_cdc.server.rate_limit import RateLimiter
from athena_cdc.slicing import TimeSlice

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024


class WebSocketEndpoint:
    def __init__(
        self,
        event_log: EventLog,
        hub: Hub,
        metrics: Metrics,
        *,
        slow_consumer_limit: int,
        ping_interval: float,
        rate_limit: float | None = None,
        max_subscriptions: int | None = None,
    ) -> None:
        self.log = event_log
        self.hub = hub
        self.metrics = metrics
        self.slow_consumer_limit = slow_consumer_limit
        self.ping_interval = ping_interval
        self.rate_limit = rate_limit
        self.max_subscriptions = max_subscriptions
        self.accepting = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            name = client_name(request.headers.get(CLIENT_HEADER), request.query.get("client"))
        except HandshakeRejected as rejected:
            self.metrics.rejected_upgrades.inc()
            return web.json_response(rejected.body(), status=400, dumps=_dumps)
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
        ws = web.WebSocketResponse(
            compress=False,  # frames must be the same bytes for every subscriber
            heartbeat=self.ping_interval,
            max_msg_size=MAX_MESSAGE_BYTES + 1,  # aiohttp refuses sizes >= this value
            decode_text=False,
        )
        if not ws.can_prepare(request).ok:
            self.metrics.rejected_upgrades.inc()
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
        self.metrics.connections_total.inc()
        self.hub.add(conn)
        try:
            # Subscribe and queue "subscribed" in one step: no event can slip between.
            self.hub.subscribe(conn, name)
            conn.send(m.subscribed_message(name))
            await self._serve(ws, conn)
        finally:
            self.hub.remove(conn)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        limiter = RateLimiter(self.rate_limit) if self.rate_limit else None
        async for msg in ws:
            if conn.closing:
                continue  # closing: read on until the close handshake ends
            if limiter is not None and not limiter.allow():
                self._error(
                    conn,
                    m.ProtocolError(
                        "rate_limited",
                        f"Too many messages; at most {self.rate_limit:g} per second.",
                    ),
                )
                continue
            if msg.type is WSMsgType.TEXT:
                await self._on_text(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._error(
                    conn,
                    m.ProtocolError(
                        "invalid_message", "Binary frames are not accepted; send JSON text frames."
                    ),
                )
            elif msg.type is WSMsgType.ERROR:
                log.debug("client %r: %s", conn.client_id, ws.exception())

    async def _on_text(self, conn: Connection, data: bytes | str) -> None:
        try:
            message = m.parse_client_message(data)
        except m.ProtocolError as error:
            self._error(conn, error)
            return
        try:
            await self._act(conn, message)
        except Exception:
            # A bug must not cost the client its connection, nor its place in the stream.
            log.exception("client %r: handling %r failed", conn.client_id, message)
            self._error(conn, m.ProtocolError("internal_error", "The server failed to answer."))

    async def _act(self, conn: Connection, message: m.ClientMessage) -> None:
        if isinstance(message, m.Travel):
            await self._travel(conn, message)
        elif isinstance(message, m.Subscribe):
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
            conn.send(m.subscribed_message(conn.client_id, message.organization_id))
        elif isinstance(message, m.Unsubscribe):
            self.hub.unsubscribe(conn, message.organization_id)
            conn.send(m.unsubscribed_message(conn.client_id, message.organization_id))
        else:
            conn.send(m.PONG_MESSAGE)

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
            until = await self._newest_seqs(conn, channels, time_slice)
            query = TravelQuery(
                channels, travel.since_seq, travel.since_ts_ms, travel.limit, until
            )
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
