"""The asyncio client: reconnects by itself and resumes every channel without loss.

One :class:`Client` holds at most one WebSocket at a time. Each connection
(:class:`_Session`) reads the server's ``subscribed`` message, checks the log's epoch,
and walks every channel's :class:`~athena_cdc.client.cursor.Cursor` through subscribe
and travel (page after page) until it is live; replies come in the order requests were
sent (docs/protocol.md), so a FIFO of requests in flight says what each reply answers.
Items go to the application through a bounded queue: a slow application stops the
reading, the server's buffer for us fills, the server closes with 4008, and the client
resumes from the last seq it received — slow, never lossy.

Depends on ``websockets`` and the standard library only (``json`` keeps integers of
any size exact), not on the server's packages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from ssl import SSLContext
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from athena_cdc.client import tokens
from athena_cdc.client.backoff import Backoff
from athena_cdc.client.cursor import Cursor, Phase, Start, Step
from athena_cdc.client.errors import ClientError, Refused, TokenUnavailable
from athena_cdc.client.items import Dropped, Event, Gap, Item, Position, Reset, State
from athena_cdc.protocol import close_codes  # a module of constants, no dependencies

log = logging.getLogger("athena_cdc.client")

Json = Any
TokenSource = Callable[[], str | Awaitable[str]]
StateListener = Callable[[State, str], None]

DEFAULT_PAGE_SIZE = 5_000  # events per catch-up travel (the server allows up to 50,000)
DEFAULT_BUFFER = 10_000  # items received and not yet taken by the application
MAX_IN_FLIGHT = 32  # requests sent and not yet answered
RETRY_LATER_S = 1.0  # after rate_limited (the server's bucket refills) or unavailable
# Codes that say "not now": the request is sent again after RETRY_LATER_S.
PASSING_ERRORS = frozenset({"unavailable", "internal_error"})
# HTTP answers to the upgrade that a retry cannot change (401 is handled apart).
FINAL_STATUSES = frozenset({400, 403, 404, 405, 426})
MAX_REFUSED_TOKENS = 3


@dataclass(frozen=True)
class _Positioned:
    """Queue marker: a channel got its position without an item (a probe)."""

    channel: str
    position: Position


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_END = object()  # queue marker: close() was called
_Queued = Item | _Positioned | _Failure | object


@dataclass(eq=False)
class _Request:
    message: dict[str, Json]
    cursor: Cursor | None = None
    step: Step | None = None


def connect(
    url: str,
    *,
    client: str,
    token: str | None = None,
    refresh_token: TokenSource | None = None,
    headers: Mapping[str, str] | None = None,
    backoff: Backoff | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    buffer: int = DEFAULT_BUFFER,
    open_timeout: float = 10.0,
    max_size: int | None = 64 * 1024 * 1024,
    on_state: StateListener | None = None,
    ssl: SSLContext | None = None,
) -> Client:
    """A client for ``url`` (``ws://host:4053/ws``), connecting as ``client``.

    Use it as ``async with connect(...) as c:`` (or ``c = await connect(...)`` and
    ``await c.close()``). ``token`` goes in ``Authorization: Bearer``; ``refresh_token``
    (a function, sync or async, returning a fresh token) is called before the token in
    force expires and when reconnecting needs a new one. ``ssl``: the TLS context for a
    ``wss://`` server whose certificate the system does not trust (a private CA).
    """
    return Client(
        url,
        client=client,
        token=token,
        refresh_token=refresh_token,
        headers=headers,
        backoff=backoff,
        page_size=page_size,
        buffer=buffer,
        open_timeout=open_timeout,
        max_size=max_size,
        on_state=on_state,
        ssl=ssl,
    )


class Client:
    """See :func:`connect`. Iterate it for :class:`Event`, :class:`Gap`, :class:`Reset`
    and :class:`Dropped` items."""

    def __init__(
        self,
        url: str,
        *,
        client: str,
        token: str | None = None,
        refresh_token: TokenSource | None = None,
        headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        buffer: int = DEFAULT_BUFFER,
        open_timeout: float = 10.0,
        max_size: int | None = 64 * 1024 * 1024,
        on_state: StateListener | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("ws", "wss"):
            raise ValueError(f"url must start with ws:// or wss://, not {url!r}")
        if ssl is not None and scheme != "wss":
            raise ValueError("ssl is for wss:// URLs")
        if not isinstance(client, str) or not client.strip():
            raise ValueError("client must be a non-empty string (the X-Athena-Client name)")
        if not 1 <= page_size <= 50_000:
            raise ValueError("page_size must be between 1 and 50000")
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self.url = url
        self.client_name = client.strip()
        self._token = token
        self._token_obtained_ms = time.time() * 1000
        self._token_stale = False  # the server said it expired, or refused it
        self._refresh_token = refresh_token
        self._headers = dict(headers or {})
        self._backoff = backoff or Backoff()
        self._page_size = page_size
        self._buffer = buffer
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._on_state = on_state
        self._ssl = ssl
        self._cursors: dict[str, Cursor] = {}
        self._positions: dict[str, Position] = {}
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._space = asyncio.Event()
        self._markers = 0  # _Positioned entries in the queue (not items)
        self._state = State.CONNECTING
        self._live = asyncio.Event()
        self._session: _Session | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.expires_at_ms: int | None = tokens.expiry_ms(token) if token else None
        self.epoch: str | None = None  # the log's epoch, as the server last said
        self.connections = 0  # connections opened so far (1 + reconnects)
        self._went_live = False  # since the last reconnect: then backoff starts small again

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> Client:
        """Start connecting (in the background); returns at once."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return self

    def __await__(self) -> Generator[Any, None, Client]:
        return self.start().__await__()

    async def __aenter__(self) -> Client:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and end the iteration (items not taken are dropped)."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._set_state(State.CLOSED, "closed by the application")
        self._queue.put_nowait(_END)

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        since_seq: int | None = None,
        epoch: str | None = None,
        since_ts_ms: int | None = None,
        last: int | None = None,
    ) -> None:
        """Follow ``channel`` from a position, then live; returns at once.

        ``since_seq`` (with the ``epoch`` it was saved under, if known): every event
        after it. ``since_ts_ms``: from the first event at or after that time. ``last``:
        the newest ``last`` events. None of them: from the newest event when the client
        first reaches the server (nothing before it). Subscribing again to a channel
        starts it again from the new position.
        """
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty string")
        given = [name for name, value in
                 (("since_seq", since_seq), ("since_ts_ms", since_ts_ms), ("last", last))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of since_seq, since_ts_ms, last (got {given})")
        for name, value in (("since_seq", since_seq), ("since_ts_ms", since_ts_ms), ("last", last)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
        if epoch is not None and since_seq is None:
            raise ValueError("epoch goes with since_seq (the position saved under it)")
        if channel in self._cursors:
            await self.unsubscribe(channel)
        cursor = Cursor(channel, Start(since_seq, since_ts_ms, last), epoch)
        self._cursors[channel] = cursor
        if since_seq is not None:
            self._positions[channel] = Position(since_seq, epoch)
        if self._session is not None:
            self._session.follow(cursor)

    async def unsubscribe(self, channel: str) -> None:
        """Stop following ``channel`` (items of it already received are still handed over)."""
        if self._cursors.pop(channel, None) is None:
            return
        self._positions.pop(channel, None)
        if self._session is not None:
            self._session.send_unsubscribe(channel)

    # -- what the application reads -----------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def channels(self) -> list[str]:
        return list(self._cursors)

    @property
    def positions(self) -> dict[str, Position]:
        """Each channel's position after the last item taken from the client: persist
        these and subscribe with them to resume where the application left off."""
        return dict(self._positions)

    @property
    def backlog(self) -> int:
        """Items received and not yet taken by the application (how far behind it is)."""
        return self._queue.qsize() - self._markers

    def position(self, channel: str) -> Position | None:
        return self._positions.get(channel)

    def channel_state(self, channel: str) -> State:
        """CONNECTING, CATCHING_UP or LIVE for one channel (CLOSED if not followed)."""
        cursor = self._cursors.get(channel)
        if cursor is None:
            return State.CLOSED
        if self._session is None:
            return State.CONNECTING
        return State.LIVE if cursor.phase is Phase.LIVE else State.CATCHING_UP

    async def wait_live(self) -> None:
        """Wait until connected with every channel caught up (wrap in ``asyncio.timeout``)."""
        while self._state is not State.LIVE:
            if self._state is State.CLOSED:
                raise ClientError("the client is closed")
            self._live.clear()
            await self._live.wait()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        while True:
            if self._closed:
                raise StopAsyncIteration
            queued = await self._queue.get()
            self._space.set()
            if queued is _END:
                raise StopAsyncIteration
            if isinstance(queued, _Failure):
                self._queue.put_nowait(queued)  # every later call raises it too
                raise queued.error
            if isinstance(queued, _Positioned):
                self._markers -= 1
                if queued.channel in self._cursors:
                    self._positions[queued.channel] = queued.position
                continue
            assert isinstance(queued, Event | Gap | Reset | Dropped)
            item: Item = queued
            if isinstance(item, Dropped):
                self._positions.pop(item.channel, None)
            elif item.channel in self._cursors:
                self._positions[item.channel] = item.position
            return item

    # -- inside -------------------------------------------------------------------------

    async def _emit(self, items: Sequence[Item | _Positioned]) -> None:
        for item in items:
            while self._queue.qsize() >= self._buffer:
                self._space.clear()
                await self._space.wait()
            self._queue.put_nowait(item)
            if isinstance(item, _Positioned):
                self._markers += 1

    def _set_state(self, state: State, detail: str = "") -> None:
        if state is self._state:
            return
        self._state = state
        if state in (State.LIVE, State.CLOSED):
            self._live.set()
        if state is State.LIVE:
            self._went_live = True
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                log.exception("the on_state callback failed")

    def _update_state(self) -> None:
        if self._closed:
            return
        if self._session is None:
            self._set_state(State.CONNECTING)
        elif all(cursor.phase is Phase.LIVE for cursor in self._cursors.values()):
            self._set_state(State.LIVE, "every channel has caught up")
        else:
            self._set_state(State.CATCHING_UP, "replaying what was missed")

    async def _run(self) -> None:
        delays = self._backoff.delays()
        refused_tokens = 0
        try:
            while True:
                try:
                    why, quick = await self._connect_once()
                    refused_tokens = 0
                except _TokenRefused as exc:
                    # A fresh token refused with 401: once may be a clock skew, three
                    # times is a callback handing out bad tokens.
                    refused_tokens += 1
                    if refused_tokens >= MAX_REFUSED_TOKENS:
                        raise TokenUnavailable(
                            f"the server refused {refused_tokens} tokens in a row: {exc}"
                        ) from None
                    why, quick = str(exc), False
                if self._went_live:
                    delays = self._backoff.delays()  # a good connection: start small again
                    self._went_live = False
                delay = next(delays)
                if quick:  # 4008: the server is fine, only our reading was slow
                    delay = min(delay, self._backoff.initial)
                self._set_state(State.CONNECTING, f"{why}; reconnecting in {delay:.1f} s")
                log.info("%s; reconnecting in %.1f s", why, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except ClientError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: surface it to the application, do not hang
            log.exception("the client failed")
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._set_state(State.CLOSED, str(exc))
        self._queue.put_nowait(_Failure(exc))

    async def _connect_once(self) -> tuple[str, bool]:
        """One connection, until it ends: (why it ended, whether to come back soon)."""
        try:
            token = await self._usable_token()
        except _CallbackFailed as exc:
            return str(exc), False
        headers = {**self._headers, "X-Athena-Client": self.client_name}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # websockets refuses ssl=None for wss:// (it makes its own context): pass it only if set
        tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
        try:
            ws = await ws_connect(
                self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                max_size=self._max_size,
                close_timeout=2,
                compression=None,
                **tls,
            )
        except InvalidStatus as exc:
            return self._refused(exc)
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"cannot connect to {self.url} ({_describe(exc)})", False
        self.connections += 1
        session = _Session(self, ws)
        try:
            why, quick, code = await session.run()
            if code == close_codes.TOKEN_EXPIRED:
                self._token_stale = True
            return why, quick
        finally:
            self._session = None  # (_run reports the state, with the reason)
            for cursor in self._cursors.values():
                cursor.disconnected()
            await session.stop()

    def _refused(self, exc: InvalidStatus) -> tuple[str, bool]:
        status = exc.response.status_code
        error, message = _error_body(bytes(exc.response.body or b""))
        if status == 401 and self._refresh_token is not None:
            self._token_stale = True
            raise _TokenRefused(f"HTTP 401 {error}: {message}")
        if status in FINAL_STATUSES or status == 401:
            raise Refused(status, error, message)
        return f"the server answered HTTP {status} {error} {message}".rstrip(), False

    async def _usable_token(self) -> str | None:
        """The token to connect with, refreshed first when it is due or was refused."""
        if self._refresh_token is None:
            return self._token
        now = time.time() * 1000
        expires = tokens.expiry_ms(self._token) if self._token else None
        if self._token is None or self._token_stale or tokens.due(
            now, expires, self._token_obtained_ms
        ):
            await self._fetch_token()
        return self._token

    async def _fetch_token(self) -> str:
        """Call the refresh callback (a sync one in a thread: it may do I/O)."""
        assert self._refresh_token is not None
        source = self._refresh_token
        try:
            if inspect.iscoroutinefunction(source):
                result: Any = await source()
            else:
                result = await asyncio.to_thread(source)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            raise _CallbackFailed(f"the refresh_token callback failed: {exc!r}") from exc
        if not isinstance(result, str) or not result:
            raise _CallbackFailed(f"the refresh_token callback returned {result!r}, not a token")
        if result == self._token and not self._token_stale:
            return result  # the same token: it was not obtained now
        self._token = result
        self._token_obtained_ms = time.time() * 1000
        self._token_stale = False
        self.expires_at_ms = tokens.expiry_ms(result)
        return result


class _TokenRefused(ClientError):
    """HTTP 401 with a token from the callback: a new one may do (three in a row: fatal)."""


class _CallbackFailed(ClientError):
    """The refresh_token callback raised or returned no token: tried again after a while."""


class _Session:
    """One WebSocket connection of a :class:`Client`."""

    def __init__(self, owner: Client, ws: ClientConnection) -> None:
        self.owner = owner
        self.ws = ws
        self.ready: collections.deque[Cursor | _Request] = collections.deque()
        self.in_flight: collections.deque[_Request] = collections.deque()
        self.wake = asyncio.Event()
        self.refreshed = asyncio.Event()
        self.refresh_failed = False
        self.auth_disabled = False
        self.tasks: list[asyncio.Task[None]] = []
        self.timers: list[asyncio.TimerHandle] = []
        self.paused_until = 0.0  # (monotonic) after rate_limited: nothing is sent before

    async def run(self) -> tuple[str, bool, int | None]:
        """Serve the connection until it ends: why, whether to come back soon, the close code."""
        owner = self.owner
        try:
            hello = await asyncio.wait_for(self._receive(), owner._open_timeout)
            if hello.get("status") != "subscribed":
                return f"unexpected first message {json.dumps(hello)[:200]}", False, None
            epoch = hello.get("epoch")
            owner.epoch = epoch if isinstance(epoch, str) else owner.epoch
            self._note_expiry(hello.get("expires_at_ms"))
            owner._session = self
            own = owner._cursors.get(owner.client_name)
            if own is None or own.phase is Phase.PROBING:
                # The server subscribed us to our own channel. Nobody asked for it (or a
                # probe needs it quiet: its replay must not mix with live events).
                self.send_unsubscribe(owner.client_name)
            for cursor in list(owner._cursors.values()):
                await self._epoch_seen(cursor, owner.epoch)
                self.follow(cursor)
            owner._update_state()
            self.tasks.append(asyncio.create_task(self._writer()))
            self.tasks.append(asyncio.create_task(self._refresher()))
            while True:
                await self._on_message(await self._receive())
        except ConnectionClosed as exc:
            why, quick = _closed(exc)
            return why, quick, exc.rcvd.code if exc.rcvd is not None else None
        except TimeoutError:
            return "the server sent no subscribed message in time", False, None

    async def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def _receive(self) -> dict[str, Json]:
        while True:
            text = await self.ws.recv()
            if isinstance(text, bytes):
                continue
            try:
                message = json.loads(text)
            except ValueError:
                log.warning("the server sent text that is not JSON: %.200r", text)
                continue
            if isinstance(message, dict):
                return message

    # -- sending ------------------------------------------------------------------------

    def follow(self, cursor: Cursor) -> None:
        """Let the writer ask ``cursor`` for its next request."""
        self.ready.append(cursor)
        self.wake.set()

    def send_unsubscribe(self, channel: str) -> None:
        self.ready.append(_Request({"type": "unsubscribe", "organization_id": channel}))
        self.wake.set()

    async def _writer(self) -> None:
        try:
            await self._send_ready()
        except ConnectionClosed:
            pass  # the reader sees it too, and ends the session
        except Exception:
            # A bug: without its writer the connection would never catch up. Close it;
            # the next one starts afresh.
            log.exception("sending failed")
            await self.ws.close(1011, "client error")

    async def _send_ready(self) -> None:
        """The one task that sends: requests leave in the order they were made ready."""
        owner = self.owner
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.ready and len(self.in_flight) < MAX_IN_FLIGHT:
                pause = self.paused_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                entry = self.ready.popleft()
                if isinstance(entry, Cursor):
                    if owner._cursors.get(entry.channel) is not entry:
                        continue  # unsubscribed meanwhile
                    asked = entry.next_request(owner._page_size)
                    if asked is None:
                        continue
                    request = _Request(asked[1], entry, asked[0])
                else:
                    request = entry
                self.in_flight.append(request)
                await self.ws.send(json.dumps(request.message))

    def _retry_later(self, cursor: Cursor) -> None:
        cursor.failed()
        self.timers.append(
            asyncio.get_running_loop().call_later(RETRY_LATER_S, self.follow, cursor)
        )

    def _rate_limited(self, request: _Request) -> None:
        """Over the server's message rate: send nothing for a while (every request
        sent now would be refused too), then this one first."""
        self.paused_until = time.monotonic() + RETRY_LATER_S
        if request.cursor is not None:
            request.cursor.failed()
            self.ready.appendleft(request.cursor)
        else:
            self.ready.appendleft(request)
        self.wake.set()

    # -- receiving ----------------------------------------------------------------------

    async def _on_message(self, message: dict[str, Json]) -> None:
        data = message.get("data")
        channel = message.get("organization_id")
        if isinstance(data, dict) and isinstance(channel, str):
            await self._on_event(channel, data)
            return
        status = message.get("status")
        if status == "unsubscribed" and message.get("reason") is not None:
            # Not a reply: a refreshed token no longer covers the channel.
            await self._drop(str(channel), str(message["reason"]), "the token no longer covers it")
            return
        if status not in ("subscribed", "travel_complete", "unsubscribed", "refreshed", "error",
                          "pong"):
            log.debug("ignoring %r", message)
            return
        if not self.in_flight:
            log.warning("a reply to nothing: %.200r", message)
            return
        request = self.in_flight.popleft()
        self.wake.set()  # room for one more request
        await self._on_reply(request, message)

    async def _on_event(self, channel: str, data: dict[str, Json]) -> None:
        owner = self.owner
        cursor = owner._cursors.get(channel)
        seq, ts_ms = data.get("seq"), data.get("ts_ms")
        if cursor is None or type(seq) is not int or type(ts_ms) is not int:
            return  # (type(), not isinstance: JSON true is not a seq)
        if cursor.phase is Phase.PROBING:
            head = self.in_flight[0] if self.in_flight else None
            if head is not None and head.cursor is cursor and head.step in (
                Step.PROBE_HEAD,
                Step.PROBE_SINCE_TS,
            ):
                cursor.probe_event(seq)
            return
        was_live = cursor.phase is Phase.LIVE
        items = cursor.accept(Event(channel, seq, ts_ms, data.get("payload"), cursor.epoch))
        await owner._emit(items)
        if was_live and cursor.phase is not Phase.LIVE:
            log.warning("%r: live event %d after seq %s: travelling for the rest",
                        channel, seq, cursor.seq)
            self.follow(cursor)
            owner._update_state()

    async def _on_reply(self, request: _Request, message: dict[str, Json]) -> None:
        owner = self.owner
        status = message.get("status")
        kind = request.message.get("type")
        cursor = request.cursor
        if status == "error" and message.get("error") == "rate_limited" and (
            cursor is None or owner._cursors.get(cursor.channel) is cursor
        ):
            self._rate_limited(request)
            return
        if kind == "refresh":
            self._on_refresh_reply(message)
            return
        if cursor is None or request.step is None:
            return  # an unsubscribe's reply
        if owner._cursors.get(cursor.channel) is not cursor:
            return  # unsubscribed (or subscribed anew) meanwhile
        if status == "error":
            code = str(message.get("error"))
            if code in PASSING_ERRORS:
                self._retry_later(cursor)
            else:
                await self._drop(cursor.channel, code, str(message.get("message", "")))
            return
        positioned = cursor.seq is None
        had_epoch = cursor.epoch
        items = cursor.replied(request.step, message)
        await owner._emit(items)
        if cursor.seq is not None and (positioned or (had_epoch is None and cursor.epoch)):
            await owner._emit([_Positioned(cursor.channel, Position(cursor.seq, cursor.epoch))])
        if isinstance(message.get("epoch"), str):
            owner.epoch = message["epoch"]
        self.follow(cursor)
        owner._update_state()

    async def _epoch_seen(self, cursor: Cursor, epoch: str | None) -> None:
        had_epoch = cursor.epoch
        items = cursor.epoch_seen(epoch)
        await self.owner._emit(items)
        if had_epoch is None and cursor.epoch is not None and cursor.seq is not None:
            position = Position(cursor.seq, cursor.epoch)
            await self.owner._emit([_Positioned(cursor.channel, position)])

    async def _drop(self, channel: str, reason: str, message: str) -> None:
        owner = self.owner
        if owner._cursors.pop(channel, None) is None:
            return
        self.send_unsubscribe(channel)  # whatever the server still holds of it
        await owner._emit([Dropped(channel, reason, message)])
        owner._update_state()

    # -- the token ----------------------------------------------------------------------

    def _note_expiry(self, expires_at_ms: Json) -> None:
        if isinstance(expires_at_ms, int) and not isinstance(expires_at_ms, bool):
            self.owner.expires_at_ms = expires_at_ms

    def _on_refresh_reply(self, message: dict[str, Json]) -> None:
        if message.get("status") == "refreshed":
            self._note_expiry(message.get("expires_at_ms"))
            self.refresh_failed = False
        else:
            self.refresh_failed = True
            if message.get("error") == "auth_disabled":
                self.auth_disabled = True
            log.warning("token refresh refused: %s", message.get("message"))
        self.refreshed.set()

    async def _refresher(self) -> None:
        """Refresh the token in force ahead of its expiry, over this connection."""
        owner = self.owner
        if owner._refresh_token is None:
            return
        while not self.auth_disabled:
            expires = owner.expires_at_ms
            if expires is None:
                return  # a token without expiry, or auth off
            now = time.time() * 1000
            delay = tokens.refresh_delay(now, expires, owner._token_obtained_ms)
            if self.refresh_failed:  # try again soon, but not in a loop
                delay = max(min(5.0, (expires - now) / 4000), 0.5)
            await asyncio.sleep(delay)
            in_force = owner._token
            try:
                token = await owner._fetch_token()
            except _CallbackFailed as exc:
                log.warning("%s", exc)
                self.refresh_failed = True
                continue
            if token == in_force:  # not renewed yet (a token file, say): ask again later
                self.refresh_failed = True
                continue
            self.refreshed.clear()
            self.ready.append(_Request({"type": "refresh", "token": token}))
            self.wake.set()
            await self.refreshed.wait()


def _closed(exc: ConnectionClosed) -> tuple[str, bool]:
    """Why a connection ended, in words, and whether to reconnect at once."""
    frame = exc.rcvd
    if frame is None:
        return "the connection was lost", False
    code, reason = frame.code, frame.reason
    words = f"the server closed the connection ({code}{': ' + reason if reason else ''})"
    if code == close_codes.SLOW_CONSUMER:
        return words, True
    if code == close_codes.TOKEN_EXPIRED:
        return words, True
    return words, False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_body(body: bytes | None) -> tuple[str, str]:
    """(error, message) of a JSON refusal; the raw text when it is not JSON."""
    text = (body or b"").decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return "", text[:200]
    if not isinstance(parsed, dict):
        return "", text[:200]
    message = str(parsed.get("message", ""))
    if parsed.get("hint"):
        message += f" ({parsed['hint']})"
    return str(parsed.get("error", "")), message
