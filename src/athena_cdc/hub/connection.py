"""One WebSocket client's outbound side: coalesced writes, travel hold-back, slow readers.

Everything the server sends to a client goes through :class:`Connection`, so order is
the order of calls. Live events arrive as *batches*: the frames of consecutive events
of one channel joined into one ``bytes`` object that the hub builds once and shares
between all subscribers. A connection keeps references to those blobs and writes
them with a single ``transport.write`` when the hub flushes it at the end of the
event-loop tick: one system call per client per tick, however many events.

While a travel is answered, live batches are *held* and released after the ack; the
travel stops where the live stream was when it began, so each event is sent once.

When a client's socket is full, what comes next for it waits in the connection (as
references to the shared batches); a client whose waiting data passes ``limit`` is a
slow consumer: the waiting data is dropped, and it is closed with 4008 and told to
travel from its last seq. Nothing is lost, the log has the events. The close frame
follows what the transport already held (whole frames), and the client is given a
grace to read it all (see :meth:`Connection._close_ws`); only a client that stops
reading is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from athena_cdc.auth.tokens import OPEN_GRANT, Grant
from athena_cdc.log.base import Event
from athena_cdc.protocol import close_codes
from athena_cdc.protocol.frames import text_frame
from athena_cdc.slicing import TimeSlice

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

BULK_CHUNK_BYTES = 256 * 1024  # travel replies are written in chunks of about this size
WRITE_HIGH_WATER = 64 * 1024  # unsent bytes in the transport that mean "socket full"
# A closing client is dropped when it reads nothing for CLOSE_GRACE_S, or has not read
# what was buffered for it within close_grace(): CLOSE_GRACE_S plus the time it takes
# at CLOSE_DRAIN_FLOOR_BPS (a slow mobile link), at most CLOSE_GRACE_MAX_S.
CLOSE_GRACE_S = 5.0
CLOSE_DRAIN_FLOOR_BPS = 64 * 1024
CLOSE_GRACE_MAX_S = 60.0
CLOSE_POLL_S = 0.05
TRAVEL_WRITE_TIMEOUT_S = 30.0  # a client that does not read a travel reply for this long is slow


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


class Batch:
    """Consecutive events of one channel and their frames joined once."""

    __slots__ = ("blob", "channel", "events")

    def __init__(self, channel: str, events: Sequence[Event], blob: bytes) -> None:
        self.channel = channel
        self.events = events
        self.blob = blob


class Connection:
    __slots__ = (
        "_drain",
        "_draining",
        "_held",
        "_held_bytes",
        "_on_dirty",
        "_on_slow",
        "_pending",
        "_pending_bytes",
        "_transport",
        "_ws",
        "channels",
        "client_id",
        "closing",
        "dirty",
        "expiry",
        "grant",
        "limit",
        "opened_at",
        "write_timeout",
    )

    def __init__(
        self,
        client_id: str,
        transport: Transport,
        *,
        limit: int,
        on_dirty: Callable[[Connection], None],
        on_slow: Callable[[Connection], None] = lambda conn: None,
        ws: web.WebSocketResponse | None = None,
        drain: Callable[[], object] | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.client_id = client_id
        self.opened_at = time.time()  # the ops console shows connections' age
        self.write_timeout = TRAVEL_WRITE_TIMEOUT_S if write_timeout is None else write_timeout
        self.channels: set[str] = set()
        self.limit = limit
        self.dirty = False
        self.closing = False
        self._transport = transport
        self._ws = ws
        self._drain = drain
        self._on_dirty = on_dirty
        self._on_slow = on_slow
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._draining: asyncio.Task[None] | None = None
        self._held: list[Batch] | None = None
        self._held_bytes = 0
        # What the client's token allows (everything with auth off), and the timer that
        # closes the connection with 1008 when that token expires.
        self.grant: Grant = OPEN_GRANT
        self.expiry: asyncio.TimerHandle | None = None

    # -- queueing (event-loop thread, no awaits) -------------------------------------
    def send(self, message: bytes) -> None:
        """Queue one server message (JSON) behind everything queued before it."""
        self._queue(text_frame(message))

    def deliver(self, batch: Batch) -> None:
        """Queue a batch of live events (hot path: called once per subscriber)."""
        if self.closing:
            return
        held = self._held
        if held is not None:
            held.append(batch)
            self._held_bytes += len(batch.blob)
            if self._held_bytes > self.limit:
                self.close_slow()
            return
        self._queue(batch.blob)

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self.dirty:
            self.dirty = True
            self._on_dirty(self)

    def flush(self) -> None:
        """Write everything queued with one system call; close if the client lags.

        While the socket is full (the transport holds more than ``WRITE_HIGH_WATER``
        unsent), new data waits here instead of in the transport: it costs only
        references to the shared batches, and a slow consumer's backlog can be dropped
        at once, so its close frame follows a short tail and the event loop never
        pushes megabytes to a client that is being closed.
        """
        self.dirty = False
        pending = self._pending
        if not pending or self.closing:
            pending.clear()
            self._pending_bytes = 0
            return
        if self._draining is not None:
            if self._pending_bytes > self.limit:
                self.close_slow()
            return
        transport = self._transport
        if transport.is_closing():
            self._discard_pending()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_bytes = 0
        transport.write(data)
        if transport.get_write_buffer_size() > WRITE_HIGH_WATER and self._drain is not None:
            self._draining = asyncio.get_running_loop().create_task(self._wait_writable())

    def _discard_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0

    async def _drained(self) -> bool:
        """Wait until the socket takes data again; False (and closed with 4008) if the
        client reads nothing for ``write_timeout``: a stuck client would otherwise keep
        its backlog, and a travel's reply and held events, for as long as it lives."""
        if self._drain is None:
            return True
        drained = self._drain()
        if asyncio.iscoroutine(drained) or isinstance(drained, asyncio.Future):
            try:
                await asyncio.wait_for(drained, self.write_timeout)
            except TimeoutError:
                self.close_slow()
                return False
        return True

    async def _wait_writable(self) -> None:
        """Until the socket takes data again, then write what waited meanwhile."""
        try:
            writable = await self._drained()
        except (ConnectionError, RuntimeError):
            writable = False  # the connection is gone
        self._draining = None
        if writable and self._pending and not self.closing:
            self.flush()

    # -- read-only views (the ops console; asked per request, never per event) ----------
    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for this client: queued here, held behind a travel, and
        accepted by the transport but not yet by the kernel."""
        return self._pending_bytes + self._held_bytes + self._transport.get_write_buffer_size()

    @property
    def socket_full(self) -> bool:
        """The client's socket stopped taking data; what comes next waits here."""
        return self._draining is not None

    @property
    def peer(self) -> str | None:
        """The remote address ("host:port"), if the transport knows it."""
        info = getattr(self._transport, "get_extra_info", None)
        address = info("peername") if info is not None else None
        if isinstance(address, tuple) and len(address) >= 2:
            host = str(address[0])
            return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
        return None

    # -- travel ----------------------------------------------------------------------
    def hold(self) -> None:
        """Hold live events back (a travel is being answered)."""
        self.flush()  # what was queued before the travel goes out before it
        self._held = []
        self._held_bytes = 0

    def release(self) -> None:
        """Queue the held events behind the travel's ack.

        The travel itself stops at the seqs this connection had been sent when it
        began (``TravelQuery.until_seq``), so no held event is also in the reply.
        """
        held, self._held = self._held or [], None
        self._held_bytes = 0
        for batch in held:
            self._queue(batch.blob)

    def first_held_seqs(self) -> dict[str, int]:
        """The first seq held back per channel since :meth:`hold` (where the travel,
        which must not return what follows live, ends at the latest)."""
        first: dict[str, int] = {}
        for batch in self._held or ():
            first.setdefault(batch.channel, batch.events[0].seq)
        return first

    async def write_bulk(
        self, frames: Sequence[bytes], time_slice: TimeSlice | None = None
    ) -> None:
        """Write a travel reply in large chunks, waiting for the socket between them
        and giving way to the event loop when ``time_slice`` is spent."""
        # What still waits for a full socket goes first, in the same write.
        chunk: list[bytes] = list(self._pending)
        size = self._pending_bytes
        self._discard_pending()
        for frame in frames:
            chunk.append(frame)
            size += len(frame)
            if size >= BULK_CHUNK_BYTES:
                await self._write_and_drain(b"".join(chunk))
                chunk, size = [], 0
                if time_slice is not None:
                    await time_slice.pause()
        if chunk:
            await self._write_and_drain(b"".join(chunk))
            if time_slice is not None:
                await time_slice.pause()

    async def _write_and_drain(self, data: bytes) -> None:
        if self.closing or self._transport.is_closing():
            raise ConnectionResetError("connection closed during travel")
        self._transport.write(data)
        if not await self._drained():
            raise ConnectionResetError("client stopped reading a travel")

    # -- closing ---------------------------------------------------------------------
    def abort(self) -> None:
        """Drop the socket at once, nothing more written: after a failed write what
        the client got is unknown, so it must reconnect and travel from its last seq."""
        self.closing = True
        self.dirty = False
        self._discard_pending()
        self._held = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        with contextlib.suppress(Exception):
            self._transport.abort()

    def close_slow(self) -> None:
        if self.closing:
            return
        log.info(
            "closing slow consumer %r (4008): %d bytes unsent",
            self.client_id,
            self._transport.get_write_buffer_size(),
        )
        self._on_slow(self)
        self.close(close_codes.SLOW_CONSUMER, close_codes.SLOW_CONSUMER_REASON)

    def close(self, code: int, reason: str, max_grace: float = CLOSE_GRACE_MAX_S) -> None:
        """Send a close frame after what is already written, then drop the socket.

        ``max_grace`` caps the time the client has to read what is buffered (a client
        whose token expired must not go on reading for a minute).
        """
        if self.closing:
            return
        self.closing = True
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._discard_pending()  # never sent: the client will travel from its last seq
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self._held = None
        if self._ws is not None:
            _keep(asyncio.get_running_loop().create_task(self._close_ws(code, reason, max_grace)))
        else:
            self._transport.abort()

    async def _close_ws(self, code: int, reason: str, max_grace: float) -> None:
        """The close frame, after everything already written, then the socket closed.

        Every write is of whole frames, so the close frame lands on a frame boundary
        behind them; nothing new is queued once closing. The client then has a grace
        to read what the transport still holds: :func:`close_grace` of what is
        buffered, as long as it reads something every ``CLOSE_GRACE_S``. Only a peer
        that reads nothing, or reads too slowly to finish within the grace, is
        aborted (dropping its buffered bytes: a stuck client must not hold our memory).
        """
        assert self._ws is not None
        closer = asyncio.get_running_loop().create_task(
            self._ws.close(code=code, message=reason.encode(), drain=False)
        )
        try:
            if not await self._drained_within_grace(max_grace):
                self._transport.abort()
        finally:
            if not closer.done():
                # The close frame is out; aiohttp waits for the client's answer (and
                # closes the socket after its own timeout when none comes).
                _keep(closer)
            elif not closer.cancelled():
                closer.exception()  # retrieved: a close on a dead socket may fail

    async def _drained_within_grace(self, max_grace: float) -> bool:
        """Wait until the transport has handed every byte (the close frame included)
        to the kernel; False if the client stopped reading or ran out of grace."""
        loop = asyncio.get_running_loop()
        transport = self._transport
        started = loop.time()
        await asyncio.sleep(0)  # the close frame is written
        size = transport.get_write_buffer_size()
        deadline = started + min(close_grace(size), max_grace)
        progress_at = started
        while size:
            await asyncio.sleep(CLOSE_POLL_S)
            now = loop.time()
            current = transport.get_write_buffer_size()
            if current < size:
                progress_at = now
            size = current
            if size and (now - progress_at >= CLOSE_GRACE_S or now >= deadline):
                log.info(
                    "client %r: %d bytes unread after %.1f s of closing; dropping it",
                    self.client_id,
                    size,
                    now - started,
                )
                return False
        return True


def close_grace(buffered: int) -> float:
    """How long a closing client may take to read what is still buffered for it: the
    base grace, plus the time to read it at a slow but real rate, capped."""
    return min(CLOSE_GRACE_S + buffered / CLOSE_DRAIN_FLOOR_BPS, CLOSE_GRACE_MAX_S)


def _keep(task: asyncio.Task[Any]) -> None:
    """Keep a background task referenced until it ends (the loop holds tasks weakly)."""
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[Any]] = set()
