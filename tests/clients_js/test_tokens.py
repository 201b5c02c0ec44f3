"""The JS client with auth on: tokens from a callback, refreshed before they expire and
on every reconnection, in headers (Node) or in the URL (browsers)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tests.clients_js._support import JsClient, publish_to, start_js_client
from tests.protocol._support import event
from tests.support.servers import http_url, running_server, ws_url

SECRET = "js-client-test-secret-of-32-bytes-or-more"
READER_CHANNELS = ["reader", "feed"]


def token(ttl: float, **claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + ttl), **claims}, SECRET, algorithm="HS256")


PRODUCER = token(3600, publish=["*"])


async def give_token(client: JsClient, ttl: float, within: float = 15) -> None:
    """Answer the client's next getToken() call."""
    await client.next_type("need_token", within)
    client.send({"token": token(ttl, channels=READER_CHANNELS)})


@pytest.mark.parametrize("transport", ["ws", "browser"])
async def test_a_client_refreshes_its_token_and_stays_connected_past_its_expiry(
    node: str, js_clients: list[JsClient], transport: str
) -> None:
    async with running_server(store="memory", jwt_secret=SECRET) as srv:
        client = await start_js_client(
            node,
            transport,
            url=ws_url(srv),
            client="reader",
            tokenFromStdin=True,
            subscribe=[{"channel": "feed", "sinceSeq": 0}],
        )
        js_clients.append(client)
        await give_token(client, ttl=2)
        connected = await client.next_type("connect")
        first_expiry = connected["expiresAtMs"]
        assert first_expiry is not None
        published = 0
        refreshes = 0
        # Several token lifetimes (each 1-2 s, as `exp` is in whole seconds); the client
        # asks for the next token well before the one in force expires.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await publish_to(http_url(srv, ""), [event("feed", published)], token=PRODUCER)
            published += 1
            try:
                await give_token(client, ttl=2, within=0.5)
                refreshes += 1
            except AssertionError:
                pass  # no refresh asked for in this half second
        await client.wait_for_seqs({"feed": published})
        await client.close()

    assert time.time() * 1000 > first_expiry + 2000
    assert refreshes >= 3
    assert client.of_type("disconnect") == [] and client.of_type("error") == []
    assert len(client.of_type("connect")) == 1
    assert [ln["payload"] for ln in client.of_type("event")] == list(range(published))


async def test_an_expired_token_closes_with_1008_and_the_client_comes_back_with_a_new_one(
    node: str, js_clients: list[JsClient]
) -> None:
    async with running_server(store="memory", jwt_secret=SECRET) as srv:
        client = await start_js_client(
            node,
            url=ws_url(srv),
            client="reader",
            tokenFromStdin=True,
            subscribe=[{"channel": "feed", "sinceSeq": 0}],
        )
        js_clients.append(client)
        await give_token(client, ttl=2)
        await client.next_type("subscribed")
        await publish_to(http_url(srv, ""), [event("feed", 1)], token=PRODUCER)
        # The refresh is asked for, and not answered in time: the server closes with 1008.
        await client.next_type("need_token")
        closed = await client.next_type("disconnect")
        await publish_to(http_url(srv, ""), [event("feed", 2)], token=PRODUCER)
        # The late answer is for the connection that is gone; the next one gets a new token.
        client.send({"token": token(2, channels=READER_CHANNELS)})
        await give_token(client, ttl=60)
        await client.wait_for_seqs({"feed": 2})
        await publish_to(http_url(srv, ""), [event("feed", 3)], token=PRODUCER)
        await client.wait_for_seqs({"feed": 3})
        await client.close()

    assert (closed["code"], closed["reason"]) == (1008, "token expired")
    assert [ln["payload"] for ln in client.of_type("event")] == [1, 2, 3]
    assert len(client.of_type("connect")) == 2


async def test_a_channel_the_token_does_not_cover_is_refused_and_the_others_go_on(
    node: str, js_clients: list[JsClient]
) -> None:
    async with running_server(store="memory", jwt_secret=SECRET) as srv:
        client = await start_js_client(
            node,
            "browser",
            url=ws_url(srv),
            client="reader",
            token=token(600, channels=READER_CHANNELS),
            subscribe=[{"channel": "secret", "sinceSeq": 0}, {"channel": "feed", "sinceSeq": 0}],
        )
        js_clients.append(client)
        refused = await client.next_type("refused")
        await client.next(lambda line: line == {"type": "subscribed", "channel": "feed"})
        await publish_to(
            http_url(srv, ""), [event("secret", "no"), event("feed", "yes")], token=PRODUCER
        )
        await client.wait_for_seqs({"feed": 1})
        positions = (await client.close())["positions"]

    assert refused["channel"] == "secret" and "secret" in refused["message"]
    [error] = client.of_type("error")
    assert (error["kind"], error["code"], error["channel"]) == ("channel", "forbidden", "secret")
    assert [(ln["channel"], ln["payload"]) for ln in client.of_type("event")] == [("feed", "yes")]
    assert list(positions) == ["feed"]
