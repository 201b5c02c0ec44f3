"""The Redis store on a Redis Cluster (``--store redis+cluster://host:port,...``).

The same log as :class:`~athena_cdc.log.redis.RedisLog` (one stream and one meta hash
per channel, under the hash tag ``{channel}``), with what a Cluster changes:

* **One script per slot.** A script may only touch one slot's keys, so an append is
  split by slot and :data:`~athena_cdc.log.redis_scripts.APPEND_SLOT` runs once per
  slot (concurrently). A batch over channels of several slots is atomic per slot
  only: if one slot's part fails, the others may be stored (the 503 says "may or may
  not have been stored", as for any failed write).
* **An epoch marker per slot.** Whether a channel's keys are missing because it is new
  or because its shard lost its data cannot be told from the channel. So the log
  writes its epoch into a marker key in every one of the 16,384 slots when it is
  created, and each slot's script checks its marker: a missing marker means that
  shard lost its data, and the log moves to a new epoch (compare-and-set on the
  global epoch key, then every marker rewritten). Channels on the shards that kept
  their data keep their seqs -- no seq is reused under the new epoch -- and the lost
  ones start again at 1. A marker that holds an older epoch (a rewrite cut short) is
  repaired to the global one: it survived, so its shard did not lose its data.
* **The fence per slot.** Source positions are recorded per slot, beside the marker,
  and checked by each slot's script: the part of a stale or replayed transaction is
  refused in every slot that already has it and taken where it is missing, so each
  slot gets it exactly once although a batch over several slots is not atomic. The
  global position (where a source resumes) is written after every slot's part.
* **No global channel set**: channels are found with ``SCAN`` on every primary.
* **Sharded pub/sub.** After the scripts, the batch is ``SPUBLISH``ed to its
  partition (the same 16 as with one Redis), and every process ``SSUBSCRIBE``s to the
  16 partitions on the primaries that own their slots -- one connection per primary.
  Gap fill and tail checks do not depend on pub/sub's order.

Durability: ``none`` only (``WAIT`` would have to follow every slot's primary).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Connection
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from athena_cdc.log.base import (
    Event,
    LogStats,
    NewEvent,
    SourcePosition,
    StalePosition,
    StorageUnavailable,
)
from athena_cdc.log.epoch import new_epoch
from athena_cdc.log.redis import (
    EPOCH_KEY,
    PARTITIONS,
    POSITIONS_KEY,
    PREFIX,
    REDIS_FAILURES,
    RedisConfigError,
    RedisLog,
    _encode_batch,
    log,
    meta_key,
    now_ms,
    partition_of,
    position_order,
    stream_key,
)
from athena_cdc.log.redis_scripts import APPEND_SLOT, NEW_EPOCH
from athena_cdc.log.redis_url import reason

MARKER_WRITE_CHUNK = 1_024  # marker SETs per pipeline


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each slot, a short string that hashes to it (as a hash tag). About a
    second to find, once per process."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    number = 0
    while missing:
        tag = f"{number:x}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        number += 1
    return tuple(t for t in tags if t is not None)


def marker_key(slot: int) -> str:
    return f"{PREFIX}:{{{slot_tags()[slot]}}}:epoch"


def slot_positions_key(slot: int) -> str:
    return f"{PREFIX}:{{{slot_tags()[slot]}}}:positions"


def slot_of(channel: str) -> int:
    return int(key_slot(stream_key(channel).encode()))


class RedisClusterLog(RedisLog):
    """The Redis store on a Redis Cluster (see the module docstring)."""

    name = "redis-cluster"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._append_slot_script = self._client.register_script(APPEND_SLOT)
        self._new_epoch_script = self._client.register_script(NEW_EPOCH)

    async def open(self) -> None:
        if self._durability.mode != "none":
            await self._client.aclose()
            raise RedisConfigError(
                f"--redis-durability {self._durability.mode} is not available on a Redis "
                "Cluster yet: use none"
            )
        await asyncio.get_running_loop().run_in_executor(None, slot_tags)
        await super().open()

    async def _check_durability(self) -> None:
        return None

    async def _follow_primary(self) -> None:
        return None  # the cluster client follows MOVED redirections itself

    # -- the epoch ------------------------------------------------------------------
    async def _load_epoch(self) -> str:
        """The log's epoch; a new log writes the markers first (only where missing), then
        the global key, so that no process ever sees a log without its markers."""
        stored = await self._client.get(EPOCH_KEY)
        if stored is not None:
            return str(stored.decode())
        candidate = new_epoch()
        await self._write_markers(candidate, only_missing=True)
        if await self._client.set(EPOCH_KEY, candidate, nx=True):
            log.info("new event log in Redis Cluster %s: epoch %s", self._safe_url(), candidate)
        stored = await self._client.get(EPOCH_KEY)
        return stored.decode() if stored is not None else candidate

    async def _write_markers(self, epoch: str, only_missing: bool) -> None:
        for start in range(0, REDIS_CLUSTER_HASH_SLOTS, MARKER_WRITE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for slot in range(start, min(REDIS_CLUSTER_HASH_SLOTS, start + MARKER_WRITE_CHUNK)):
                pipe.set(marker_key(slot), epoch, nx=only_missing)
            await pipe.execute()

    async def _shard_lost_data(self) -> None:
        """A slot without its marker: its shard lost its data. Move the log to a new epoch
        (one process wins the compare-and-set; all write the same markers)."""
        epoch = (await self._new_epoch_script([EPOCH_KEY], [self.epoch, new_epoch()])).decode()
        log.warning("a Redis Cluster shard lost its data: the log moves to epoch %s", epoch)
        await self._write_markers(epoch, only_missing=False)
        await self._epoch_changed()

    async def _tail_check(self, all_channels: bool) -> None:
        """Also look at the epoch markers of the checked channels' slots: a shard that
        lost its data is noticed without waiting for an append to it (its channels'
        subscribers would otherwise just hear nothing)."""
        channels = [c for c in self._views if all_channels or self.interest(c)]
        slots = sorted({slot_of(c) for c in channels})
        for start in range(0, len(slots), MARKER_WRITE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for slot in slots[start : start + MARKER_WRITE_CHUNK]:
                pipe.get(marker_key(slot))
            if any(marker is None for marker in await pipe.execute()):
                await self._shard_lost_data()
                return
        await self._catch_up(channels)

    # -- appends --------------------------------------------------------------------
    async def _append_now(
        self, batch: Sequence[NewEvent], position: SourcePosition | None
    ) -> list[Event]:
        by_channel: dict[str, list[NewEvent]] = {}
        for item in batch:
            by_channel.setdefault(item.channel, []).append(item)
        by_slot: dict[int, list[str]] = {}
        for channel in by_channel:
            by_slot.setdefault(slot_of(channel), []).append(channel)
        head: list[str | bytes | int] = [
            self.epoch,
            now_ms(),
            self._retention_events,
            position.source if position else "",
            position.position if position else "",
            position_order(position.position) if position else "",
            position_order(position.after) if position and position.after else "",
        ]
        try:
            replies = await asyncio.gather(
                *(
                    self._append_slot(slot, channels, by_channel, head)
                    for slot, channels in by_slot.items()
                )
            )
            if position is not None:
                await self._client.hset(POSITIONS_KEY, position.source, position.position)
        except REDIS_FAILURES as exc:
            self._problem = f"redis: {reason(exc)}"
            raise StorageUnavailable(f"Redis is unavailable ({reason(exc)})") from None
        starts: dict[str, tuple[int, int]] = {}
        for channels, reply in zip(by_slot.values(), replies, strict=True):
            for i, channel in enumerate(channels):
                starts[channel] = (int(reply[2 * i]), int(reply[2 * i + 1]))
        next_seq = {channel: first for channel, (first, _) in starts.items()}
        events: list[Event] = []
        for item in batch:
            seq = next_seq[item.channel]
            next_seq[item.channel] = seq + 1
            events.append(Event.build(item.channel, seq, starts[item.channel][1], item.payload))
        await self._announce(by_channel, starts)
        self._deliver_own(events, by_channel)
        return events

    async def _append_slot(
        self,
        slot: int,
        channels: list[str],
        by_channel: dict[str, list[NewEvent]],
        head: list[str | bytes | int],
    ) -> list[Any]:
        keys = [marker_key(slot), slot_positions_key(slot)]
        args = list(head)
        for channel in channels:
            keys += [stream_key(channel), meta_key(channel)]
            args.append(len(by_channel[channel]))
            args += [item.payload for item in by_channel[channel]]
        for _ in range(3):
            try:
                reply: list[Any] = await self._append_slot_script(keys, args)
                return reply
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("STALE"):
                    raise StalePosition(text) from None
                if text.startswith("LOST"):
                    await self._shard_lost_data()
                    raise StorageUnavailable(
                        "a Redis Cluster shard lost its data: the log starts over under "
                        "a new epoch"
                    ) from None
                if not text.startswith("EPOCH"):
                    raise
                stored = await self._client.get(EPOCH_KEY)
                if stored is None or stored.decode() != self.epoch:
                    await self._epoch_changed()
                    raise StorageUnavailable(
                        "the Redis log starts over under a new epoch"
                    ) from None
                # The marker is older than the log's epoch (a rewrite cut short): it
                # survived, so its shard kept its data: repair it and try again.
                await self._client.set(keys[0], self.epoch)
                args[0] = self.epoch
        raise StorageUnavailable("the Redis Cluster epoch markers keep changing")

    async def _announce(
        self, by_channel: dict[str, list[NewEvent]], starts: dict[str, tuple[int, int]]
    ) -> None:
        """SPUBLISH each channel's new events to its partition, on the primary that owns
        the partition's slot. A lost announcement is found by the others' tail checks."""
        sends = []
        for channel, (first, ts) in starts.items():
            partition = partition_of(channel)
            message = _encode_batch(channel, first, ts, [i.payload for i in by_channel[channel]])
            node = self._client.get_node_from_key(partition)
            sends.append(
                self._client.execute_command("SPUBLISH", partition, message, target_nodes=node)
            )
        with contextlib.suppress(*REDIS_FAILURES):
            await asyncio.gather(*sends)

    # -- live delivery --------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _live_messages(self) -> AsyncIterator[Callable[[], Awaitable[bytes | None]]]:
        """SSUBSCRIBE to the partitions, one connection per primary that owns some."""
        client: RedisCluster = self._client
        await client.initialize()
        by_node: dict[tuple[str, int], list[str]] = {}
        for n in range(PARTITIONS):
            partition = f"{PREFIX}:live:{n}"
            node = client.get_node_from_key(partition)
            if node is None:
                raise RedisConnectionError(f"no Redis Cluster node owns {partition}")
            by_node.setdefault((node.host, int(node.port)), []).append(partition)
        queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        connections: list[Connection] = []
        readers: list[asyncio.Task[None]] = []
        kwargs = client.get_connection_kwargs()
        try:
            for (host, port), partitions in by_node.items():
                options: dict[str, Any] = {
                    k: v
                    for k, v in kwargs.items()
                    if k in ("username", "password", "socket_connect_timeout")
                }
                connection = Connection(host=host, port=port, **options)
                await connection.connect()  # type: ignore[no-untyped-call]
                for partition in partitions:  # one slot per SSUBSCRIBE
                    await connection.send_command("SSUBSCRIBE", partition)
                connections.append(connection)
                readers.append(asyncio.create_task(self._read_shard(connection, queue)))

            async def next_batch() -> bytes | None:
                try:
                    item = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    return None
                if isinstance(item, BaseException):
                    raise item
                return item

            yield next_batch
        finally:
            for reader in readers:
                reader.cancel()
            for connection in connections:
                with contextlib.suppress(Exception):
                    await connection.disconnect()

    @staticmethod
    async def _read_shard(
        connection: Connection, queue: asyncio.Queue[bytes | BaseException]
    ) -> None:
        try:
            while True:
                reply = await connection.read_response(timeout=None)
                kind = reply[0]
                if kind == b"smessage":
                    queue.put_nowait(reply[2])
                elif kind == b"sunsubscribe":  # the slot moved to another primary
                    raise RedisConnectionError("a partition's slot moved: resubscribing")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the listening loop, which reconnects
            queue.put_nowait(exc if isinstance(exc, RedisError | OSError) else RedisError(exc))

    # -- channels and stats ---------------------------------------------------------
    async def _channel_names(self) -> AsyncIterator[str]:
        """Every channel of the log: ``SCAN`` on every primary."""
        prefix, suffix = f"{PREFIX}:{{", "}:meta"
        async for key in self._client.scan_iter(match=f"{PREFIX}:{{*}}:meta", count=1_000):
            name = key.decode()
            if name.startswith(prefix) and name.endswith(suffix):
                yield name[len(prefix) : -len(suffix)]

    async def _update_stats(self) -> None:
        names = [name async for name in self._channel_names()]
        events = 0
        if len(names) <= 10_000:
            pipe = self._client.pipeline(transaction=False)
            for channel in names:
                pipe.xlen(stream_key(channel))
            events = sum(int(n) for n in await pipe.execute())
        info = await self._client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        used = sum(int(node.get("used_memory", 0)) for node in info.values())
        self._stats = LogStats(len(names), events, used)
        self._delivered_since_stats = 0
