"""Auth over real sockets: who may connect, read, travel, refresh, publish and scrape."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import client, event, post_events, publish, upgrade_answer
from tests.support.servers import http_url, running_server, ws_url

SECRET = "athena-test-secret-of-at-least-32-bytes"
OPS_KEY = "ops-key-for-prometheus"


def token(ttl: float = 3600, **claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + ttl), **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def server() -> Any:
    async with running_server(
        store="memory", jwt_secret=SECRET, protect_ops=True, ops_key=OPS_KEY
    ) as srv:
        yield srv


async def test_an_upgrade_without_a_valid_token_is_401_and_outside_its_channels_403(
    server: AthenaServer,
) -> None:
    status, body = await upgrade_answer(server, {"X-Athena-Client": "org_42"})
    assert status == 401 and body["error"] == "unauthorized", body
    status, body = await upgrade_answer(
        server, {"X-Athena-Client": "org_42", **bearer(token(ttl=-60, channels=["*"]))}
    )
    assert status == 401 and "expired" in body["message"], body
    status, body = await upgrade_answer(
        server, {"X-Athena-Client": "org_42", **bearer(token(channels=["org_43"]))}
    )
    assert (status, body["error"]) == (403, "forbidden"), body


async def test_subscribed_carries_the_tokens_expiry_and_query_tokens_work(
    server: AthenaServer,
) -> None:
    t = token(channels=["org_42"])
    expected = jwt.decode(t, SECRET, algorithms=["HS256"])["exp"] * 1000
    async with client(server, "org_42", subscribed=False, headers=bearer(t)) as c:
        hello = await c.recv()
        assert hello["status"] == "subscribed" and hello["expires_at_ms"] == expected
    async with client(f"{ws_url(server)}?token={t}", "org_42", subscribed=False) as c:
        assert (await c.recv())["expires_at_ms"] == expected


async def test_subscribe_and_travel_outside_the_token_are_forbidden_and_nothing_leaks(
    server: AthenaServer,
) -> None:
    await publish(server, [event("secret", {"n": 0})], headers=bearer(token(publish=["*"])))
    async with client(server, "org_42", headers=bearer(token(channels=["org_*"]))) as c:
        for request in (
            {"type": "subscribe", "organization_id": "secret"},
            {"subscribe_to_organization_id": "secret"},
            {"type": "travel", "organization_id": "secret"},
        ):
            reply = await c.request(request)
            assert reply["error"] == "forbidden" and reply["organization_id"] == "secret"
        await publish(server, [event("secret", {"n": 1})], headers=bearer(token(publish=["*"])))
        reply = await c.request({"type": "subscribe", "organization_id": "org_43"})
        assert reply["status"] == "subscribed"
        events, ack = await c.travel()  # no organization_id: subscribed channels only
        assert events == [] and ack["count"] == 0
        await c.expect_silence()


async def test_refresh_replaces_the_token_and_drops_channels_it_no_longer_covers(
    server: AthenaServer,
) -> None:
    async with client(server, "org_42", headers=bearer(token(channels=["org_*"]))) as c:
        await c.request({"type": "subscribe", "organization_id": "org_43"})
        bad = await c.request({"type": "refresh", "token": "not-a-jwt"})
        assert bad["error"] == "unauthorized"
        narrower = token(ttl=7200, channels=["org_42"])
        await c.send({"type": "refresh", "token": narrower})
        dropped = await c.recv()
        assert dropped == {
            "status": "unsubscribed",
            "client_id": "org_42",
            "organization_id": "org_43",
            "reason": "forbidden",
        }
        refreshed = await c.recv()
        assert refreshed["status"] == "refreshed"
        assert refreshed["expires_at_ms"] == jwt.decode(narrower, SECRET, ["HS256"])["exp"] * 1000
        await publish(
            server, [event("org_43", 1), event("org_42", 2)], headers=bearer(token(publish=["*"]))
        )
        message = await c.recv()
        assert message["organization_id"] == "org_42"  # org_43 no longer delivered


async def test_the_connection_closes_with_1008_when_its_token_expires_on_time(
    server: AthenaServer,
) -> None:
    exp = int(time.time()) + 2
    t = jwt.encode({"exp": exp, "channels": ["org_42"]}, SECRET, algorithm="HS256")
    async with client(server, "org_42", headers=bearer(t)) as c:
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv(within=5)
        assert abs(time.time() - exp) < 0.5
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")


async def test_a_refresh_pushes_the_expiry_back(server: AthenaServer) -> None:
    async with client(server, "org_42", headers=bearer(token(ttl=2, channels=["*"]))) as c:
        await c.request({"type": "refresh", "token": token(ttl=60, channels=["*"])})
        await asyncio.sleep(2.5)
        await c.ping()  # still open


async def test_publish_needs_a_token_whose_publish_patterns_cover_every_event(
    server: AthenaServer,
) -> None:
    status, body = await post_events(server, [event("org_42", 1)])
    assert (status, body["error"]) == (401, "unauthorized")
    headers = bearer(token(publish=["org_42"], channels=["*"]))
    status, body = await post_events(
        server, [event("org_42", 1), event("other", 2)], headers=headers
    )
    assert (status, body["error"]) == (403, "forbidden")
    assert (await publish(server, [event("org_42", 3)], headers=headers))[0][
        "seq"
    ] == 1  # nothing was appended before


async def test_metrics_need_admin_or_the_ops_key_while_health_and_ready_stay_open(
    server: AthenaServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/health", "/ready"):
            async with session.get(http_url(server, path)) as response:
                assert response.status == 200
        for headers, status in (
            ({}, 401),
            (bearer(token(channels=["*"])), 403),
            (bearer(token(admin=True)), 200),
            (bearer(OPS_KEY), 200),
        ):
            async with session.get(http_url(server, "/metrics"), headers=headers) as response:
                assert response.status == status, (headers, await response.text())


async def test_an_origin_outside_allowed_origins_is_refused() -> None:
    async with running_server(store="memory", allowed_origins=["https://app.example"]) as srv:
        status, body = await upgrade_answer(
            srv, {"X-Athena-Client": "a", "Origin": "https://evil.example"}
        )
        assert (status, body["error"]) == (403, "forbidden")
        async with client(srv, "a", headers={"Origin": "https://app.example"}):
            pass


async def test_with_auth_off_refresh_is_answered_and_nothing_else_changes() -> None:
    async with running_server(store="memory") as srv, client(srv, "a", subscribed=False) as c:
        hello = await c.recv()
        assert "expires_at_ms" not in hello
        assert (await c.request({"type": "refresh", "token": "x"}))["error"] == "auth_disabled"


async def test_an_invalid_upgrade_is_answered_before_any_upgrade(server: AthenaServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with client(server, "org_42"):
            pass
    assert refused.value.response.status_code == 401


async def raw(srv: AthenaServer, request: bytes) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    body = await reader.readexactly(length)
    writer.close()
    return status, json.loads(body)


async def test_a_token_that_is_not_ascii_is_401_json_everywhere(server: AthenaServer) -> None:
    auth = b"Authorization: Bearer \xff\xfe\r\n"
    for request in (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"X-Athena-Client: org_42\r\n" + auth + b"\r\n",
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n" + auth + b"\r\n[]",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
    ):
        status, body = await raw(server, request)
        assert (status, body["error"]) == (401, "unauthorized"), (request, body)


async def test_an_exp_beyond_the_year_9999_is_refused_not_a_crash(server: AthenaServer) -> None:
    far = jwt.encode({"exp": 10**20, "channels": ["*"]}, SECRET, algorithm="HS256")
    status, body = await upgrade_answer(server, {"X-Athena-Client": "org_42", **bearer(far)})
    assert status == 401 and "exp" in body["message"]
    async with client(server, "org_42", headers=bearer(token(channels=["*"]))) as c:
        reply = await c.request({"type": "refresh", "token": far})
        assert reply["error"] == "unauthorized"
        await c.ping()  # the old token still in force, the connection open


def test_a_refresh_message_never_shows_its_token() -> None:
    from athena_cdc.protocol.messages import Refresh

    assert "secret-token" not in repr(Refresh("secret-token"))
