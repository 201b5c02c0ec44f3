"""Two tenants under load: no frame of one ever reaches a client of the other."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import jwt

from tests.protocol._support import client, event, publish
from tests.support.servers import running_server

SECRET = "isolation-test-secret-of-at-least-32b"
CLIENTS_PER_TENANT = 100
ROUNDS = 20


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


async def test_two_tenants_with_100_clients_each_never_see_each_others_events() -> None:
    async with running_server(store="memory", jwt_secret=SECRET) as srv:
        producer = {"Authorization": f"Bearer {token(publish=['*'])}"}
        async with contextlib.AsyncExitStack() as stack:
            tenants: dict[str, list[Any]] = {"acme": [], "globex": []}
            for tenant, clients in tenants.items():
                read = {"Authorization": f"Bearer {token(channels=[f'{tenant}:*'])}"}
                for i in range(CLIENTS_PER_TENANT):
                    c = await stack.enter_async_context(
                        client(srv, f"{tenant}:user{i}", headers=read)
                    )
                    # Every client also tries to reach the other tenant; all refused.
                    other = "globex" if tenant == "acme" else "acme"
                    for request in (
                        {"type": "subscribe", "organization_id": f"{other}:feed"},
                        {"subscribe_to_organization_id": f"{other}:feed"},
                    ):
                        assert (await c.request(request))["error"] == "forbidden"
                    assert (
                        await c.request({"type": "subscribe", "organization_id": f"{tenant}:feed"})
                    )["status"] == "subscribed"
                    clients.append(c)
            for n in range(ROUNDS):
                await publish(
                    srv,
                    [
                        event("acme:feed", {"t": "acme", "n": n}),
                        event("globex:feed", {"t": "globex", "n": n}),
                    ],
                    headers=producer,
                )

            async def drain(tenant: str, c: Any) -> None:
                for n in range(ROUNDS):
                    message = await c.recv(within=20)
                    assert message["organization_id"] == f"{tenant}:feed", message
                    assert message["data"]["payload"] == {"t": tenant, "n": n}
                events, _ = await c.travel(organization_id=f"{tenant}:feed")
                assert {e["organization_id"] for e in events} == {f"{tenant}:feed"}
                refused = await c.request(
                    {
                        "type": "travel",
                        "organization_id": "acme:feed" if tenant == "globex" else "globex:feed",
                    }
                )
                assert refused["error"] == "forbidden"

            await asyncio.gather(
                *(drain(tenant, c) for tenant, clients in tenants.items() for c in clients)
            )
