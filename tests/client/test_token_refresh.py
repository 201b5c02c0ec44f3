"""Tokens: refreshed through the callback before they expire (over the open connection)
and before reconnecting with one that is due; channels a token does not cover end as
Dropped; without a callback, an expired token ends the client with 401."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from athena_cdc.client import Dropped, Event, Refused, connect
from athena_cdc.server.app import AthenaServer
from tests.client._support import FAST, take
from tests.protocol._support import event, publish
from tests.support.servers import running_server, ws_url

SECRET = "athena-test-secret-of-at-least-32-bytes"


def token(ttl: float, **claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + ttl), **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def server() -> AsyncIterator[AthenaServer]:
    async with running_server(store="memory", jwt_secret=SECRET) as srv:
        yield srv


async def produce(server: AthenaServer, channel: str, payload: Any) -> None:
    await publish(server, [event(channel, payload)], headers=bearer(token(60, publish=["*"])))


async def test_the_refresh_callback_keeps_one_connection_alive_past_the_first_tokens_expiry(
    server: AthenaServer,
) -> None:
    calls: list[float] = []

    async def fresh() -> str:
        calls.append(time.monotonic())
        return token(4, channels=["org_*"])

    # exp is in whole seconds: the first token lives 2-3 s; each is refreshed at half
    # its lifetime, leaving a second or more of margin on a busy machine.
    first = token(3, channels=["org_*"])
    async with connect(ws_url(server), client="org_42", token=first, refresh_token=fresh,
                       backoff=FAST) as c:
        await c.subscribe("org_42", since_seq=0)
        await asyncio.wait_for(c.wait_live(), 10)
        await asyncio.sleep(7)  # more than twice the first token's lifetime
        await produce(server, "org_42", "still here")
        [item] = await take(c, 1)
        assert isinstance(item, Event) and item.payload == "still here"
        assert c.connections == 1, "refreshed in place, never reconnected"
        assert len(calls) >= 2
        assert c.expires_at_ms is not None and c.expires_at_ms > time.time() * 1000


async def test_a_token_that_is_due_is_refreshed_before_reconnecting(server: AthenaServer) -> None:
    calls = 0

    def fresh() -> str:  # a plain function works too (it runs in a thread)
        nonlocal calls
        calls += 1
        return token(60, channels=["org_42"])

    expired = token(-10, channels=["org_42"])
    async with connect(ws_url(server), client="org_42", token=expired, refresh_token=fresh,
                       backoff=FAST) as c:
        await c.subscribe("org_42", since_seq=0)
        await asyncio.wait_for(c.wait_live(), 10)
        assert (calls, c.connections) == (1, 1)


async def test_without_a_callback_an_expired_token_ends_the_client_with_401(
    server: AthenaServer,
) -> None:
    async with connect(ws_url(server), client="org_42", token=token(-10, channels=["*"]),
                       backoff=FAST) as c:
        with pytest.raises(Refused) as refused:
            await asyncio.wait_for(anext(c), 10)
        assert refused.value.status == 401


async def test_channels_the_token_does_not_cover_end_as_dropped(server: AthenaServer) -> None:
    narrower = token(60, channels=["org_42"])
    async with connect(ws_url(server), client="org_42", token=token(3, channels=["org_*"]),
                       refresh_token=lambda: narrower, backoff=FAST) as c:
        await c.subscribe("secret", since_seq=0)
        await c.subscribe("org_43", since_seq=0)
        [dropped] = await take(c, 1)
        assert dropped == Dropped("secret", "forbidden", dropped.message)  # type: ignore[union-attr]
        # The refresh (at half the 3 s lifetime) narrows the token: org_43 goes too.
        [dropped] = await take(c, 1, within=10)
        assert isinstance(dropped, Dropped) and (dropped.channel, dropped.reason) == (
            "org_43",
            "forbidden",
        )
        assert c.channels == [] and c.connections == 1
