"""The Redis/Valkey Streams store: one event log shared by several athena-cdc processes.

*History* lives in Redis (see :mod:`athena_cdc.log.redis_scripts` for the keys): one
Lua script per append batch assigns the seqs, keeps ts_ms non-decreasing, XADDs with
the seqs as entry IDs, trims by count, checks the source-position fence and PUBLISHes
the batch, all atomically. *Live delivery* is Redis pub/sub: every process subscribes
to a fixed set of partitions (a channel always maps to the same one) on one
connection, and hands each channel's events to its listeners in seq order, exactly
once, whichever process appended them:

* a per-channel cursor (the last seq delivered here) drops what was already delivered
  (an event this process appended is delivered at once when it directly follows the
  cursor, and its pub/sub copy is then dropped);
* pub/sub is at-most-once, so a gap (seq n+2 after n) is filled from ``XRANGE``
  before delivering, and a periodic tail check (the meta hash's last seq) on channels
  with local subscribers catches the silence after a pub/sub outage.

:meth:`bounds` is that local view (no I/O); :meth:`refresh_bounds` brings it up to
Redis for the channels a travel names, delivering what it finds missing, so that a
travel ending at ``bounds().last_seq`` and the live events after it meet exactly.

With a durable ``--redis-durability`` an append is announced (the meta's ``ok`` mark
and the PUBLISH) only once durable, and processes deliver only up to ``ok``. Behind
Sentinel, a process follows a failover to the new primary (:meth:`_follow_primary`).
A travel while Redis is down is answered from :mod:`athena_cdc.log.redis_cache` when
it holds the whole answer.

This class runs on one Redis primary (with replicas, optionally behind Sentinel): its
append script touches the global keys and every channel of a batch. On a Redis Cluster,
:class:`athena_cdc.log.redis_cluster.RedisClusterLog` splits that by slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from athena_cdc.log.base import (
    EMPTY_BOUNDS,
    ChannelBounds,
    Event,
    EventLog,
    LogStats,
    NewEvent,
    SourcePosition,
    StalePosition,
    StorageUnavailable,
    StoreConfigError,
)
from athena_cdc.log.epoch import new_epoch
from athena_cdc.log.redis_cache import RecentEvents
from athena_cdc.log.redis_durability import Durability
from athena_cdc.log.redis_scripts import APPEND, CONFIRM, FIRST_AT_TS, PRUNE_AGE
from athena_cdc.log.redis_url import connect, reason, safe_url

log = logging.getLogger(__name__)

# What a Redis that cannot answer raises (a Cluster with no reachable node raises the
# second, which is not a RedisError).
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
LIVE_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, OSError)

PREFIX = "athena-cdc"
PARTITIONS = 16  # pub/sub channels; a log channel always uses the same one
TAIL_CHECK_INTERVAL = 2.0  # seconds between tail checks of subscribed channels
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
STATS_INTERVAL = 5.0
WAIT_TIMEOUT_MS = 5_000  # how long a 201 waits for WAITAOF / WAIT before a 503
READ_PAGE = 500
GROUP_MAX_EVENTS = 5_000  # events per group commit (unless one request is larger)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RedisConfigError(StoreConfigError):
    """The Redis server cannot give what the settings ask; the message is one line."""


def stream_key(channel: str) -> str:
    return f"{PREFIX}:{{{channel}}}:events"


def meta_key(channel: str) -> str:
    return f"{PREFIX}:{{{channel}}}:meta"


EPOCH_KEY = f"{PREFIX}:epoch"
POSITIONS_KEY = f"{PREFIX}:positions"
CHANNELS_KEY = f"{PREFIX}:channels"


def partition_of(channel: str) -> str:
    return f"{PREFIX}:live:{zlib.crc32(channel.encode()) % PARTITIONS}"


_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})(?:#(\d+))?$")


def position_order(position: str) -> str:
    """A string that sorts like the positions: LSNs ``X/Y`` (``#n`` for a transaction
    applied in part, which sorts before the whole one) as fixed-width hex."""
    match = _LSN.match(position)
    if match is None:
        return position
    high, low, changes = match.groups()
    part = "f" * 16 if changes is None else f"{int(changes):016x}"
    return f"{int(high, 16):08x}{int(low, 16):08x}{part}"


def _encode_batch(channel: str, first: int, ts_ms: int, payloads: Sequence[bytes]) -> bytes:
    """A batch as the append script PUBLISHes it (see :func:`_decode_batch`)."""
    name = channel.encode()
    lengths = b",".join(b"%d" % len(p) for p in payloads)
    return b"%d %d %d %s\n" % (len(name), first, ts_ms, lengths) + name + b"".join(payloads)


def _decode_batch(message: bytes) -> list[Event]:
    """Events from a PUBLISHed batch: ``<len(channel)> <first seq> <ts> <lengths>\\n``,
    the channel, then the payloads back to back."""
    header, _, body = message.partition(b"\n")
    name_len, first, ts, lengths = header.split(b" ")
    channel = body[: int(name_len)].decode()
    offset = int(name_len)
    events: list[Event] = []
    seq, ts_ms = int(first), int(ts)
    for length in lengths.split(b","):
        end = offset + int(length)
        events.append(Event.build(channel, seq, ts_ms, body[offset:end]))
        offset = end
        seq += 1
    return events


@dataclass(slots=True)
class _View:
    """This process's view of a channel: what it has delivered, and retention."""

    last: int  # last seq delivered to this process's listeners
    first: int = 1
    dropped_ts: int | None = None


class RedisLog(EventLog):
    """The event log in Redis Streams, shared by every process that names the same Redis.

    Unlike the memory and sqlite stores, its listeners hear every process's appends.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        retention_events: int = 100_000,
        retention_age: float | None = None,
        durability: str = "none",
        cache_bytes: int = 64 * 1024**2,
    ) -> None:
        super().__init__()
        self.url = url
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._durability = Durability.parse(durability)
        # redis-py's asyncio types are sync/async unions that mypy cannot narrow.
        self._client: Any = connect(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=10
        )
        self._append_script = self._client.register_script(APPEND)
        self._confirm_script = self._client.register_script(CONFIRM)
        self._primary: Any = None  # with Sentinel: the primary's address last seen
        self._check_primary_soon = asyncio.Event()
        self._resubscribe = False  # the primary changed: pub/sub must move to it
        self._prune_script = self._client.register_script(PRUNE_AGE)
        self._first_at_ts_script = self._client.register_script(FIRST_AT_TS)
        self._views: dict[str, _View] = {}
        self._cache = RecentEvents(cache_bytes)  # for travels while Redis is down
        self._closing = False
        self._queue: collections.deque[
            tuple[Sequence[NewEvent], asyncio.Future[list[Event]]]
        ] = collections.deque()
        self._committer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub_up = asyncio.Event()
        self._problem: str | None = None
        self._stats = LogStats(0, 0, 0)
        self._delivered_since_stats = 0
        self._delivering = asyncio.Lock()  # the reader and fills deliver one at a time
        # Which channels have local subscribers (set by the server): only those are
        # tail-checked.
        self.interest: Callable[[str], bool] = lambda channel: True
        # Called when the log's epoch changed under a running process (Redis lost its
        # data): connected clients must start over.
        self.on_epoch_change: Callable[[str], None] = lambda epoch: None

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._client.ping()
            self.epoch = await self._load_epoch()
            await self._check_durability()
        except REDIS_FAILURES as exc:
            await self._client.aclose()
            raise RedisConfigError(
                f"cannot use Redis at {self._safe_url()}: {reason(exc)}"
            ) from None
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="redis-live"),
            asyncio.create_task(self._tail_check_forever(), name="redis-tail-check"),
            asyncio.create_task(self._maintain_forever(), name="redis-retention"),
        ]
        try:
            await asyncio.wait_for(self._pubsub_up.wait(), 10)
        except TimeoutError:
            raise RedisConfigError(f"cannot subscribe on Redis at {self._safe_url()}") from None

    async def close(self) -> None:
        # redis-py may swallow a cancellation that lands inside a command, so the
        # loops also check this flag, and close waits for them only a moment.
        self._closing = True
        pending = set(self._tasks)
        if self._committer is not None:
            pending.add(self._committer)
        for _ in range(5):
            for task in pending:
                task.cancel()
            if not pending:
                break
            _, pending = await asyncio.wait(pending, timeout=0.2)
        await self._client.aclose()

    def _safe_url(self) -> str:
        return safe_url(self.url)

    async def _load_epoch(self) -> str:
        """The log's epoch, created with the log: a Redis that lost its data (or a new
        one) has no epoch key, so it gets a new epoch and its seqs restart under it."""
        candidate = new_epoch()
        if await self._client.set(EPOCH_KEY, candidate, nx=True):
            log.info("new event log in Redis %s: epoch %s", self._safe_url(), candidate)
        stored = await self._client.get(EPOCH_KEY)
        return stored.decode() if stored is not None else candidate

    async def _check_durability(self) -> None:
        mode = self._durability
        if mode.mode == "waitaof":
            try:
                await self._client.execute_command("WAITAOF", 1, 0, 1_000)
            except ResponseError as exc:
                info = await self._client.info("server")
                version = info.get("redis_version", "?")
                if "unknown command" in str(exc).lower():
                    raise RedisConfigError(
                        f"--redis-durability waitaof needs Redis >= 7.2 or Valkey; "
                        f"{self._safe_url()} is Redis {version}: use none or replicas:N"
                    ) from None
                raise RedisConfigError(
                    f"--redis-durability waitaof: {reason(exc)} (turn on appendonly yes)"
                ) from None
        elif mode.mode == "replicas":
            info = await self._client.info("replication")
            connected = int(info.get("connected_slaves", 0))
            if connected < mode.replicas:
                log.warning(
                    "--redis-durability replicas:%d but Redis has %d replicas connected: "
                    "publishes will answer 503 until enough are",
                    mode.replicas,
                    connected,
                )

    # -- writes ----------------------------------------------------------------------
    async def append(
        self, batch: Sequence[NewEvent], position: SourcePosition | None = None
    ) -> list[Event]:
        """Appends that arrive while one is in flight go to Redis together, in one script
        call (a group commit): a round trip and a script per batch of requests, not per
        request. Each request stays all-or-nothing, since the whole call is."""
        if not batch:
            return []
        if position is not None:  # a source's batch: alone, for its fence
            return await self._append_now(batch, position)
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name="redis-append")
        return await future

    async def _commit_queued(self) -> None:
        queue = self._queue
        while queue:
            taken: list[tuple[Sequence[NewEvent], asyncio.Future[list[Event]]]] = []
            size = 0
            while queue and (not taken or size + len(queue[0][0]) <= GROUP_MAX_EVENTS):
                item = queue.popleft()
                taken.append(item)
                size += len(item[0])
            combined = [event for batch, _ in taken for event in batch]
            try:
                events = await self._append_now(combined, None)
            except BaseException as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            offset = 0
            for batch, future in taken:
                if not future.done():
                    future.set_result(events[offset : offset + len(batch)])
                offset += len(batch)

    async def _append_now(
        self, batch: Sequence[NewEvent], position: SourcePosition | None
    ) -> list[Event]:
        by_channel: dict[str, list[NewEvent]] = {}
        for item in batch:
            by_channel.setdefault(item.channel, []).append(item)
        keys: list[str] = [EPOCH_KEY, POSITIONS_KEY, CHANNELS_KEY]
        args: list[str | bytes | int] = [
            self.epoch,
            now_ms(),
            self._retention_events,
            position.source if position else "",
            position.position if position else "",
            position_order(position.position) if position else "",
            position_order(position.after) if position and position.after else "",
            "1" if self._durability.mode == "none" else "0",  # announce in the script
        ]
        for channel, items in by_channel.items():
            keys += [stream_key(channel), meta_key(channel)]
            args += [channel, partition_of(channel), len(items)]
            args += [item.payload for item in items]
        reply = await self._run_append(keys, args)
        # Events in input order, each channel's seqs from its first new seq.
        starts = {
            channel: (int(reply[2 * i]), int(reply[2 * i + 1]))
            for i, channel in enumerate(by_channel)
        }
        if self._durability.mode != "none":
            await self._confirm(
                [(c, first, first + len(by_channel[c]) - 1) for c, (first, _) in starts.items()]
            )
        next_seq = {channel: first for channel, (first, _) in starts.items()}
        events: list[Event] = []
        for item in batch:
            seq = next_seq[item.channel]
            next_seq[item.channel] = seq + 1
            events.append(Event.build(item.channel, seq, starts[item.channel][1], item.payload))
        self._deliver_own(events, by_channel)
        return events

    async def _run_append(self, keys: list[str], args: list[str | bytes | int]) -> list[Any]:
        try:
            try:
                if self._durability.mode == "none":
                    reply: list[Any] = await self._append_script(keys, args)
                    return reply
                return await self._durably(self._append_script, keys, args)
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("EPOCH"):
                    await self._epoch_changed()
                    raise StorageUnavailable(
                        "the Redis log lost its data and starts over under a new epoch"
                    ) from None
                if text.startswith("STALE"):
                    raise StalePosition(text) from None
                raise
        except REDIS_FAILURES as exc:
            self._problem = f"redis: {reason(exc)}"
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None

    async def _durably(self, script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        """Run ``script`` and wait until ``--redis-durability`` holds for it: WAITAOF /
        WAIT count the writes of *this* connection, so they go in the same pipeline."""
        mode = self._durability
        pipe = self._client.pipeline(transaction=False)
        await script(keys, args, client=pipe)
        if mode.mode == "waitaof":
            pipe.execute_command("WAITAOF", 1, 0, WAIT_TIMEOUT_MS)
        else:
            pipe.execute_command("WAIT", mode.replicas, WAIT_TIMEOUT_MS)
        reply, acked = await pipe.execute()
        self._problem = None if self._pubsub_up.is_set() else self._problem
        if mode.mode == "waitaof" and int(acked[0]) < 1:
            raise StorageUnavailable("Redis did not fsync the append to its AOF in time")
        if mode.mode == "replicas" and int(acked) < mode.replicas:
            self._check_primary_soon.set()  # a failover makes WAIT fail: look at once
            raise StorageUnavailable(
                f"only {int(acked)} of {mode.replicas} Redis replicas acknowledged the append"
            )
        return list(reply) if isinstance(reply, list) else [reply]

    async def _confirm(self, ranges: list[tuple[str, int, int]]) -> None:
        """With a durable mode: announce appended ``(channel, first, last)`` ranges (move
        the meta's ``ok`` and PUBLISH) only now that they are durable, and wait until the
        announcement is durable too before the 201. So no process ever delivers an event
        that a failover or crash could still take back (and whose seq would then be
        handed out again under the same epoch)."""
        keys: list[str] = []
        args: list[str | int] = []
        for channel, first, last in ranges:
            keys += [stream_key(channel), meta_key(channel)]
            args += [channel, partition_of(channel), first, last]
        try:
            await self._durably(self._confirm_script, keys, args)
        except REDIS_FAILURES as exc:
            self._problem = f"redis: {reason(exc)}"
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None

    async def _epoch_changed(self) -> None:
        old = self.epoch
        self.epoch = epoch = await self._load_epoch()
        if epoch != old:
            log.warning("the Redis log's epoch changed (%s -> %s): it lost its data", old, epoch)
            self._views.clear()
            self._cache.clear()
            self.on_epoch_change(self.epoch)

    async def get_position(self, source: str) -> str | None:
        try:
            value = await self._client.hget(POSITIONS_KEY, source)
        except REDIS_FAILURES as exc:
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None
        return None if value is None else value.decode()

    # -- live delivery ---------------------------------------------------------------
    def _deliver_own(self, events: list[Event], by_channel: dict[str, list[NewEvent]]) -> None:
        """Deliver what this process appended at once when it directly follows what was
        delivered; otherwise the pub/sub path delivers it (after filling the gap)."""
        if len(by_channel) == 1:
            grouped = {events[0].channel: events}
        else:
            grouped = {}
            for event in events:
                grouped.setdefault(event.channel, []).append(event)
        for channel, channel_events in grouped.items():
            # A channel with no cursor here yet and subscribers here: another process's
            # append of an earlier seq may still be on its way through pub/sub (the
            # script's reply and the pub/sub message travel on different connections),
            # so starting the cursor at our own first seq could skip it for them; pub/sub
            # brings ours too, in order. With nobody listening here, our seq is as good
            # a start as any, and delivering now keeps "acknowledged, then delivered".
            if channel in self._views or not self.interest(channel):
                self._deliver_if_next(channel_events)

    def _already_delivered(self, message: bytes) -> bool:
        """Whether a PUBLISHed batch holds nothing new, from its header alone: building
        the events of a 1,000-event batch only to drop them cost a third of a batch
        append's time in the appending process."""
        header, _, body = message.partition(b"\n")
        name_len, first, _, lengths = header.split(b" ")
        view = self._views.get(body[: int(name_len)].decode())
        return view is not None and int(first) + lengths.count(b",") <= view.last

    def _deliver_if_next(self, events: list[Event]) -> bool:
        """Deliver one channel's contiguous ``events`` if they follow the cursor (what
        is already delivered is cut off); False when there is a gap before them."""
        channel = events[0].channel
        view = self._views.get(channel)
        if view is None:
            # A channel this process never delivered: nobody here can be missing
            # anything before it (a travel first calls refresh_bounds).
            view = self._views[channel] = _View(events[0].seq - 1)
        if events[-1].seq <= view.last:
            return True
        if events[0].seq > view.last + 1:
            return False
        fresh = events[view.last + 1 - events[0].seq :]
        view.last = fresh[-1].seq
        excess = view.last - self._retention_events + 1
        if excess > view.first:
            view.first = excess
        self._delivered_since_stats += len(fresh)
        self._cache.add(fresh)
        self._notify(fresh)
        return True

    async def _deliver(self, events: list[Event]) -> None:
        """Deliver one channel's events in order, filling a gap before them from Redis."""
        if self._deliver_if_next(events):
            return
        view = self._views[events[0].channel]
        missing = await self._read_range(events[0].channel, view.last + 1, events[0].seq - 1)
        if missing and missing[0].seq > view.last + 1:
            view.last = missing[0].seq - 1  # retention dropped them meanwhile
        if missing:
            self._deliver_if_next(missing)
        if events[0].seq > view.last + 1:
            view.last = events[0].seq - 1  # gone from Redis too: nothing left to fill
        self._deliver_if_next(events)

    @contextlib.asynccontextmanager
    async def _live_messages(self) -> AsyncIterator[Callable[[], Awaitable[bytes | None]]]:
        """Subscribe to the partitions; yield a function that returns the next published
        batch, or None after a second without one. Raises on a lost connection."""
        pubsub: Any = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*(f"{PREFIX}:live:{n}" for n in range(PARTITIONS)))

            async def next_batch() -> bytes | None:
                # A bounded wait: a blocking read would time out after the socket
                # timeout of an idle connection.
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    return None
                data: bytes = message["data"]
                return data

            yield next_batch
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _listen_forever(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                async with self._live_messages() as next_batch:
                    self._pubsub_up.set()
                    if attempt:
                        log.info("Redis pub/sub is back: checking channels for missed events")
                        stored = await self._client.get(EPOCH_KEY)
                        if stored is None or stored.decode() != self.epoch:
                            await self._epoch_changed()  # Redis came back without its data
                        await self._tail_check(all_channels=True)
                    self._problem = None
                    attempt = 0
                    while not self._closing:
                        data = await next_batch()
                        if self._resubscribe:
                            self._resubscribe = False
                            raise RedisConnectionError("the primary changed")
                        if data is None or self._already_delivered(data):
                            continue  # e.g. our own append, delivered when Redis answered
                        events = _decode_batch(data)
                        async with self._delivering:
                            await self._deliver(events)
            except asyncio.CancelledError:
                raise
            except LIVE_FAILURES as exc:
                self._pubsub_up.clear()
                self._problem = f"redis: live delivery lost its connection ({reason(exc)})"
                if attempt == 0:
                    log.warning("Redis pub/sub failed: %s; reconnecting", exc)
            except Exception:
                log.exception("Redis live delivery failed; reconnecting")
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _tail_check_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_primary_soon.wait(), TAIL_CHECK_INTERVAL)
            self._check_primary_soon.clear()
            with contextlib.suppress(*REDIS_FAILURES, OSError, StorageUnavailable):
                await self._follow_primary()
                await self._client.ping()  # /ready recovers without waiting for a publish
                if self._pubsub_up.is_set():
                    self._problem = None
                # pub/sub may have reconnected by itself (redis-py retries) to a Redis
                # that lost its data: the epoch is checked here too, not only on our own
                # reconnects.
                stored = await self._client.get(EPOCH_KEY)
                if stored is None or stored.decode() != self.epoch:
                    await self._epoch_changed()
                await self._tail_check(all_channels=False)

    async def _follow_primary(self) -> None:
        """With Sentinel: when the Sentinels name another primary (a failover), drop every
        connection to the old one -- it may still take writes until Sentinel demotes it,
        and they would be lost -- and move pub/sub to the new one."""
        pool = self._client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return
        address = await pool.sentinel_manager.discover_master(pool.service_name)
        if self._primary is not None and address != self._primary:
            log.warning("Redis failover: the primary is now %s:%s", *address)
            pool.master_address = address
            await pool.disconnect(inuse_connections=True)
            self._resubscribe = True
        self._primary = address

    async def _tail_check(self, all_channels: bool) -> None:
        """Fill what pub/sub did not bring: compare each channel's last seq in Redis with
        what was delivered here."""
        channels = [c for c in self._views if all_channels or self.interest(c)]
        await self._catch_up(channels)

    async def _catch_up(self, channels: Sequence[str]) -> None:
        for start in range(0, len(channels), 256):
            chunk = channels[start : start + 256]
            pipe = self._client.pipeline(transaction=False)
            for channel in chunk:
                pipe.hmget(meta_key(channel), "ok", "seq", "first", "dts")
            metas = await pipe.execute()
            async with self._delivering:
                for channel, (ok, seq, first, dts) in zip(chunk, metas, strict=True):
                    # Up to what is announced (with a durable mode: durable), not what
                    # is merely assigned; a log written before ``ok`` existed has seq.
                    last = int(ok if ok is not None else seq or 0)
                    view = self._views.get(channel)
                    if view is None:
                        # Never delivered here: nobody here waits for older events.
                        view = self._views[channel] = _View(last)
                    elif last > view.last:
                        missing = await self._read_range(channel, view.last + 1, last)
                        if missing:
                            await self._deliver(missing)
                        view.last = max(view.last, last)
                    view.first = max(view.first, int(first or 1))
                    if dts is not None:
                        view.dropped_ts = int(dts)

    async def refresh_bounds(self, channels: Sequence[str]) -> None:
        try:
            await self._catch_up([c for c in dict.fromkeys(channels)])
        except REDIS_FAILURES as exc:
            # Redis is down, so nobody appends: what this process delivered of a
            # channel it follows is the channel's extent, and the travel is answered
            # from the cache if it holds the events (else read_channel says so).
            if not all(channel in self._views for channel in channels):
                raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None

    # -- reads -----------------------------------------------------------------------
    def bounds(self, channel: str) -> ChannelBounds:
        """What this process has delivered of ``channel`` (no I/O). It may lag Redis by
        the pub/sub latency; :meth:`refresh_bounds` brings it up to date."""
        view = self._views.get(channel)
        if view is None:
            return EMPTY_BOUNDS
        return ChannelBounds(min(view.first, view.last + 1), view.last, view.dropped_ts)

    async def _read_range(
        self, channel: str, low: int, high: int | None, count: int | None = None
    ) -> list[Event]:
        if high is not None and high < low:
            return []
        entries = await self._client.xrange(
            stream_key(channel), f"{low}-0", "+" if high is None else f"{high}-0", count=count
        )
        return [_entry_event(channel, entry) for entry in entries]

    async def read_channel(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None = None,
    ) -> list[Event]:
        if limit <= 0:
            return []
        args = (channel, since_seq, since_ts_ms, limit, newest, until_seq)
        if not self._pubsub_up.is_set():  # Redis is likely down: no need to wait for it
            cached = self._from_cache(*args)
            if cached is not None:
                return cached
        try:
            return await self._read_redis(*args)
        except StorageUnavailable:
            cached = self._from_cache(*args)
            if cached is None:
                raise
            return cached

    def _from_cache(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None,
    ) -> list[Event] | None:
        view = self._views.get(channel)
        if view is None:
            return None
        return self._cache.read(
            channel, view.first, view.last, since_seq, since_ts_ms, limit, newest, until_seq
        )

    async def _read_redis(
        self,
        channel: str,
        since_seq: int | None,
        since_ts_ms: int | None,
        limit: int,
        newest: bool,
        until_seq: int | None,
    ) -> list[Event]:
        low = (since_seq or 0) + 1
        high = "+" if until_seq is None else f"{until_seq}-0"
        key = stream_key(channel)
        try:
            if newest:
                newest_first: list[Event] = []
                while len(newest_first) < limit:
                    count = min(READ_PAGE, limit - len(newest_first))
                    entries = await self._client.xrevrange(key, high, f"{low}-0", count=count)
                    newest_first += [_entry_event(channel, e) for e in entries]
                    if len(entries) < count:
                        break
                    high = f"{newest_first[-1].seq - 1}-0"
                newest_first.reverse()
                if since_ts_ms is not None:
                    newest_first = [e for e in newest_first if e.ts_ms >= since_ts_ms]
                return newest_first
            if since_ts_ms is not None:
                upper = until_seq if until_seq is not None else 2**62
                at = int(await self._first_at_ts_script([key], [low, upper, since_ts_ms]))
                if at == 0:
                    return []
                low = max(low, at)
            events: list[Event] = []
            # In reads of READ_PAGE: a reply is parsed and its events built in one go,
            # so a large one would hold the event loop for tens of milliseconds.
            while len(events) < limit:
                count = min(READ_PAGE, limit - len(events))
                entries = await self._client.xrange(key, f"{low}-0", high, count=count)
                events += [_entry_event(channel, e) for e in entries]
                if len(entries) < count:
                    break
                low = events[-1].seq + 1
        except REDIS_FAILURES as exc:
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None
        return events

    # -- retention and stats ---------------------------------------------------------
    async def prune(self) -> int:
        if self._retention_age is None:
            return 0
        cutoff = now_ms() - int(self._retention_age * 1000)
        dropped = 0
        try:
            async for channel in self._channel_names():
                count = int(
                    await self._prune_script([stream_key(channel), meta_key(channel)], [cutoff])
                )
                if count:
                    dropped += count
                    meta = await self._client.hmget(meta_key(channel), "first", "dts")
                    view = self._views.get(channel)
                    if view is not None:
                        view.first = max(view.first, int(meta[0] or 1))
                        view.dropped_ts = int(meta[1]) if meta[1] is not None else None
        except REDIS_FAILURES as exc:
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None
        return dropped

    async def _channel_names(self) -> AsyncIterator[str]:
        """Every channel of the log, a page at a time (SSCAN, not SMEMBERS)."""
        cursor = 0
        while True:
            cursor, names = await self._client.sscan(CHANNELS_KEY, cursor, count=1_000)
            for name in names:
                yield name.decode()
            if cursor == 0:
                return

    async def _maintain_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(*REDIS_FAILURES, OSError, StorageUnavailable):
                await self.prune()
                await self._update_stats()
            await asyncio.sleep(STATS_INTERVAL if self._retention_age is None else 1.0)

    async def _update_stats(self) -> None:
        channels = int(await self._client.scard(CHANNELS_KEY))
        info = await self._client.info("memory")
        events = 0
        if channels <= 10_000:  # counting is a round trip per channel: only when small
            pipe = self._client.pipeline(transaction=False)
            async for channel in self._channel_names():
                pipe.xlen(stream_key(channel))
            events = sum(int(n) for n in await pipe.execute())
        self._stats = LogStats(channels, events, int(info.get("used_memory", 0)))
        self._delivered_since_stats = 0

    def stats(self) -> LogStats:
        """Counted every few seconds in the background (``bytes``: Redis used_memory),
        plus what was delivered since (before retention: an estimate until the next
        count)."""
        s = self._stats
        return LogStats(
            max(s.channels, len(self._views)), s.events + self._delivered_since_stats, s.bytes
        )

    def health(self) -> str | None:
        if not self._pubsub_up.is_set():
            return self._problem or "redis: live delivery is not connected"
        return self._problem


def _entry_event(channel: str, entry: Any) -> Event:
    entry_id, fields = entry
    seq = int(entry_id.split(b"-", 1)[0])
    return Event.build(channel, seq, int(fields[b"t"]), fields[b"p"])
