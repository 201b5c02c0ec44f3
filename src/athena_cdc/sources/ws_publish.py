"""The WebSocket ``publish`` message: a producer publishes over the connection it keeps.

Same rules as ``POST /events`` (:mod:`athena_cdc.sources.publish_batch`: one
validation, all or nothing per message, durable before the answer), without an HTTP
request per publish. A producer may send many publishes without waiting: each is
appended as soon as it is read (appends of every connection share the store's group
commit) and answered in the order sent, ``published`` with the seqs or an ``error``
with POST's code and message, both carrying the message's ``id``.

Bounds: publishes are counted in events by their own per-connection limit
(``--publish-rate-limit``, not ``--client-rate-limit``: a producer sends far more
messages than a subscriber); and at most :data:`MAX_IN_FLIGHT` messages or
:data:`MAX_IN_FLIGHT_BYTES` of them wait for their append: beyond, the connection is
not read until the oldest is answered (TCP pushes back on the producer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from athena_cdc.auth.guard import Guard, Refused
from athena_cdc.hub.connection import Connection
from athena_cdc.log.base import Event, EventLog, StorageUnavailable
from athena_cdc.logging_limits import RateLimitedLog
from athena_cdc.metrics import Metrics
from athena_cdc.protocol import messages as m
from athena_cdc.server.rate_limit import RateLimiter
from athena_cdc.sources import publish_batch
from athena_cdc.sources.publish_batch import PublishError

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)

MAX_IN_FLIGHT = 256
MAX_IN_FLIGHT_BYTES = 1024 * 1024


class _Pending:
    """One publish waiting for its append (or, behind one, for its turn to be answered)."""

    __slots__ = ("answer", "id_json", "size", "task")

    def __init__(
        self,
        id_json: bytes | None,
        size: int,
        task: asyncio.Future[list[Event]] | None,
        answer: bytes | None,
    ) -> None:
        self.id_json = id_json
        self.size = size
        self.task = task
        self.answer = answer


class ConnectionPublisher:
    """One connection's publishes: checked, appended in the order read, answered in order."""

    def __init__(
        self,
        conn: Connection,
        event_log: EventLog,
        guard: Guard,
        metrics: Metrics,
        *,
        key_matches: bool,
        rate_limit: float | None,
    ) -> None:
        self.conn = conn
        self.log = event_log
        self.guard = guard
        self.metrics = metrics
        self.key_matches = key_matches
        self.rate_limit = rate_limit
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        self._queue: deque[_Pending] = deque()
        self._bytes = 0
        # Set when the server drains: later publishes are refused, those begun are
        # answered before the connection is closed (see WebSocketEndpoint.drain).
        self.draining = False

    def submit(self, message: m.Publish, size: int) -> None:
        """Check and start appending one publish (``size``: its frame's bytes)."""
        try:
            task = self._start(message)
        except PublishError as error:
            self._error(error)
            self._answer(_Pending(message.id_json, 0, None, _error_answer(message, error)))
            return
        if task.done() and not self._queue:
            # Appended already (the memory store) and nothing ahead: answer now, with no
            # callback and no loop turn in between.
            self.conn.send(self._outcome(message.id_json, task))
            return
        pending = _Pending(message.id_json, size, task, None)
        self._queue.append(pending)
        self._bytes += size
        task.add_done_callback(self._on_done)

    def _start(self, message: m.Publish) -> asyncio.Future[list[Event]]:
        if self.draining:
            # As POST /events gets 503 while draining: nobody would be left to tell
            # the producer that this one was appended.
            raise PublishError(
                503,
                "unavailable",
                "The server is shutting down: publish again once reconnected.",
            )
        data = message.events
        if data is None:
            raise PublishError(
                400,
                "invalid_event",
                '"events" is required: one event {"organization_id": ..., "payload": ...} '
                "or an array of them.",
            )
        limiter = self.limiter
        if limiter is not None and not limiter.allow(len(data) if isinstance(data, list) else 1):
            raise PublishError(
                429,
                "rate_limited",
                f"Too many events published; at most {self.rate_limit:g} per second "
                "on one connection (--publish-rate-limit).",
            )
        events = publish_batch.events_from_json(data)
        try:
            allowed = self.guard.connection_publisher(self.conn.grant, self.key_matches)
        except Refused as refused:
            raise PublishError.refused(refused) from None
        publish_batch.check_allowed(self.guard, allowed, events)
        # Begun now, so that this append joins the store's queue before the next
        # message's (every store takes appends in the order they are called).
        return self.log.start_append(events)

    def _answer(self, pending: _Pending) -> None:
        if self._queue:
            self._queue.append(pending)  # behind appends still running: wait its turn
        else:
            assert pending.answer is not None
            self.conn.send(pending.answer)

    def _on_done(self, _: object) -> None:
        """Send every answer now due, oldest first, up to the first append still running."""
        queue = self._queue
        while queue:
            head = queue[0]
            task = head.task
            if task is not None:
                if not task.done():
                    return
                head.answer = self._outcome(head.id_json, task)
                self._bytes -= head.size
            queue.popleft()
            assert head.answer is not None
            self.conn.send(head.answer)

    def _outcome(self, id_json: bytes | None, task: asyncio.Future[list[Event]]) -> bytes:
        if task.cancelled():
            return m.publish_error_message(
                id_json, {"error": "unavailable", "message": "The server is shutting down."}
            )
        error = task.exception()
        if error is None:
            return m.published_message(id_json, publish_batch.acks(task.result()))
        if isinstance(error, StorageUnavailable):
            error = publish_batch.unavailable(error)
        if isinstance(error, PublishError):
            self._error(error)
            return m.publish_error_message(id_json, error.body())
        failures.error("client %r: publish failed: %r", self.conn.client_id, error)
        self.metrics.client_errors.labels("internal_error").inc()
        return m.publish_error_message(
            id_json, {"error": "internal_error", "message": "The server failed to answer."}
        )

    def _error(self, error: PublishError) -> None:
        self.metrics.client_errors.labels(error.error).inc()

    @property
    def full(self) -> bool:
        """Whether reading more must wait for the oldest append."""
        return len(self._queue) >= MAX_IN_FLIGHT or self._bytes >= MAX_IN_FLIGHT_BYTES

    async def wait_for_room(self) -> None:
        while self.full:
            head = self._queue[0].task
            assert head is not None  # a ready answer is never first: it is sent at once
            await asyncio.wait((head,))

    async def settle(self) -> None:
        """Wait for every append started, and its answer queued (their done callbacks,
        which queue the answers, were added first, so they have run by the time
        this returns)."""
        tasks = [p.task for p in self._queue if p.task is not None]
        if tasks:
            await asyncio.wait(tasks)


def _error_answer(message: m.Publish, error: PublishError) -> bytes:
    return m.publish_error_message(message.id_json, error.body())
