"""A synchronous face for :class:`~athena_cdc.client.connection.Client`.

The asyncio client runs on its own event loop in a daemon thread; each method hands
its work to that loop and waits. Iterating blocks until the next item.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from athena_cdc.client.connection import Client
from athena_cdc.client.items import Item, Position, State

T = TypeVar("T")


def connect_sync(url: str, **options: Any) -> SyncClient:
    """Like :func:`athena_cdc.client.connect` (same options), for code without asyncio:
    ``with connect_sync(url, client="org_42") as c: c.subscribe(...); for item in c: ...``."""
    return SyncClient(url, **options)


class SyncClient:
    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="athena-cdc-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return await Client(url, **options).start()

        try:
            self._client = self._call(make())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted (Ctrl-C): do not let the work finish unseen (it could take an
            # item from the queue that nobody would ever get).
            future.cancel()
            raise

    def subscribe(
        self,
        channel: str,
        *,
        since_seq: int | None = None,
        epoch: str | None = None,
        since_ts_ms: int | None = None,
        last: int | None = None,
    ) -> None:
        self._call(self._client.subscribe(
            channel, since_seq=since_seq, epoch=epoch, since_ts_ms=since_ts_ms, last=last
        ))

    def unsubscribe(self, channel: str) -> None:
        self._call(self._client.unsubscribe(channel))

    def next(self, timeout: float | None = None) -> Item:
        """The next item; TimeoutError after ``timeout`` seconds, StopIteration once closed."""
        async def take() -> Item:
            async with asyncio.timeout(timeout):
                return await self._client.__anext__()

        try:
            return self._call(take())
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        return self.next()

    def wait_live(self, timeout: float | None = None) -> None:
        async def wait() -> None:
            async with asyncio.timeout(timeout):
                await self._client.wait_live()

        self._call(wait())

    @property
    def state(self) -> State:
        return self._client.state

    @property
    def positions(self) -> dict[str, Position]:
        return self._client.positions

    def position(self, channel: str) -> Position | None:
        return self._client.position(channel)

    @property
    def client(self) -> Client:
        """The asyncio client underneath (its methods must run on its loop)."""
        return self._client

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.close())
        except concurrent.futures.CancelledError:
            pass
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
