"""A Python client for athena-cdc that never misses an event.

::

    async with athena_cdc.client.connect("ws://host:4053/ws", client="org_42", token=t) as c:
        await c.subscribe("org_43", since_seq=120)
        async for item in c:  # Event | Gap | Reset | Dropped
            ...

It reconnects by itself (jittered backoff), resumes every channel from the last seq it
received, hands each seq over once and in order, and says when the log could not give
it everything (:class:`Gap`) or started over (:class:`Reset`). See docs/clients.md.

Needs only the ``websockets`` package (``pip install 'athena-cdc[client]'``); importing
it does not import the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from athena_cdc.client.backoff import Backoff
from athena_cdc.client.errors import ClientError, Refused, TokenUnavailable
from athena_cdc.client.items import Dropped, Event, Gap, Item, Position, Reset, State
from athena_cdc.client.publish import Published, PublishError, publish

if TYPE_CHECKING:
    from athena_cdc.client.connection import Client, connect
    from athena_cdc.client.sync import SyncClient, connect_sync

# Imported on first use: they bring in websockets (about 0.1 s), which `athena-cdc serve`
# would otherwise pay at every start, since the command line defines `tail` here.
_LAZY = {
    "Client": "athena_cdc.client.connection",
    "connect": "athena_cdc.client.connection",
    "SyncClient": "athena_cdc.client.sync",
    "connect_sync": "athena_cdc.client.sync",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Backoff",
    "Client",
    "ClientError",
    "Dropped",
    "Event",
    "Gap",
    "Item",
    "Position",
    "PublishError",
    "Published",
    "Refused",
    "Reset",
    "State",
    "SyncClient",
    "TokenUnavailable",
    "connect",
    "connect_sync",
    "publish",
]
