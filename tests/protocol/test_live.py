"""Live delivery: order, message form, payload fidelity, subscriptions, ping."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import Client, client, event, post_events, publish, seqs


def canonical(value: Any) -> str:
    """A text form that tells apart 1 and 1.0, and keeps key order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def test_live_events_arrive_in_seq_order_without_gaps(server: AthenaServer) -> None:
    async with client(server, "orders") as c, aiohttp.ClientSession() as http:
        # Single events and arrays, sequentially and concurrently.
        for i in range(20):
            await publish(server, event("orders", i), session=http)
        await publish(server, [event("orders", 100 + i) for i in range(50)], session=http)
        await asyncio.gather(
            *(
                publish(server, [event("orders", i), event("orders", i)], session=http)
                for i in range(30)
            )
        )
        events = await c.recv_events(20 + 50 + 60)
        assert seqs(events) == list(range(1, 131))
        assert [e["data"]["payload"] for e in events[:70]] == list(range(20)) + [
            100 + i for i in range(50)
        ]
        ts = [e["data"]["ts_ms"] for e in events]
        assert ts == sorted(ts)
        await c.expect_silence(0.2)


async def test_event_message_key_order_and_types(memory_server: AthenaServer) -> None:
    before = time.time_ns() // 1_000_000
    async with client(memory_server, "k") as c:
        await publish(memory_server, event("k", {"z": 1, "a": 2}))
        raw = await c.recv_raw()
    after = time.time_ns() // 1_000_000
    assert raw.startswith('{"organization_id":"k","data":{"seq":1,"ts_ms":')
    message = json.loads(raw)
    assert list(message) == ["organization_id", "data"]
    assert list(message["data"]) == ["seq", "ts_ms", "payload"]
    ts = message["data"]["ts_ms"]
    assert type(ts) is int and before <= ts <= after
    assert raw.endswith(',"payload":{"z":1,"a":2}}}')


PAYLOADS: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    2**53 + 1,
    18446744073709551615,
    -9223372036854775808,
    1.5,
    0.1,
    -2.5e-308,
    1e300,
    1.0,
    "",
    "plain",
    'quotes " and \\ backslash / slash',
    "unicode: é ü ß 日本語 😀 \u2028 \u2029",
    "control: \u0000 \u0001 \n \t",
    [],
    {},
    list(range(5000)),
    {"nested": {"deep": [{"a": [1, {"b": None}]}, 2.25, "x"]}, "z": 1, "a": 2},
    [{"k" * 50: "v" * 1000} for _ in range(50)],
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=[canonical(p)[:30] for p in PAYLOADS])
async def test_payload_is_returned_equivalent(server: AthenaServer, payload: Any) -> None:
    async with client(server, "p") as c:
        await publish(server, event("p", payload))
        [live] = await c.recv_events(1)
        replayed, _ = await c.travel()
    assert canonical(live["data"]["payload"]) == canonical(payload)
    assert canonical(replayed[-1]["data"]["payload"]) == canonical(payload)


async def test_events_of_other_channels_are_not_delivered(memory_server: AthenaServer) -> None:
    async with client(memory_server, "mine") as mine, client(memory_server, "theirs") as theirs:
        await publish(
            memory_server,
            [event("theirs", 1), event("mine", 2), event("nobody", 3), event("theirs", 4)],
        )
        [got] = await mine.recv_events(1)
        assert got["organization_id"] == "mine"
        assert [e["data"]["payload"] for e in await theirs.recv_events(2)] == [1, 4]
        await mine.expect_silence()
        await theirs.expect_silence(0.05)


async def test_events_before_connecting_are_not_sent_live(memory_server: AthenaServer) -> None:
    await publish(memory_server, [event("c", i) for i in range(3)])
    async with client(memory_server, "c") as c:
        await publish(memory_server, event("c", "new"))
        [got] = await c.recv_events(1)
        assert got["data"]["seq"] == 4


async def test_subscribe_adds_a_channel_and_replies(memory_server: AthenaServer) -> None:
    await publish(memory_server, event("extra", "old"))
    async with client(memory_server, "a") as c:
        await c.send({"type": "subscribe", "organization_id": "extra"})
        raw = await c.recv_raw()
        assert raw == (
            '{"status":"subscribed","client_id":"a","organization_id":"extra",'
            f'"epoch":"{memory_server.log.epoch}"}}'
        )
        await publish(memory_server, [event("extra", "new"), event("a", "own")])
        got = await c.recv_events(2)
        assert [(e["organization_id"], e["data"]["seq"]) for e in got] == [("extra", 2), ("a", 1)]


async def test_legacy_subscribe_form_works_like_subscribe(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        reply = await c.request({"subscribe_to_organization_id": "legacy"})
        assert reply == {
            "status": "subscribed",
            "client_id": "a",
            "organization_id": "legacy",
            "epoch": memory_server.log.epoch,
        }
        await publish(memory_server, event("legacy", 1))
        [got] = await c.recv_events(1)
        assert got["organization_id"] == "legacy"


async def test_subscribing_twice_delivers_once(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        for _ in range(2):
            reply = await c.request({"type": "subscribe", "organization_id": "a"})
            assert reply["status"] == "subscribed"
        await publish(memory_server, event("a", 1))
        assert seqs(await c.recv_events(1)) == [1]
        await c.expect_silence()


async def test_unsubscribe_stops_delivery_and_replies(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        await c.request({"type": "subscribe", "organization_id": "b"})
        await c.send({"type": "unsubscribe", "organization_id": "b"})
        raw = await c.recv_raw()
        assert raw == '{"status":"unsubscribed","client_id":"a","organization_id":"b"}'
        await publish(memory_server, [event("b", 1), event("a", 2)])
        [got] = await c.recv_events(1)
        assert got["organization_id"] == "a"
        # Even the client-name channel can be left.
        reply = await c.request({"type": "unsubscribe", "organization_id": "a"})
        assert reply["status"] == "unsubscribed" and reply["organization_id"] == "a"
        await publish(memory_server, [event("b", 3), event("a", 4)])
        await c.expect_silence()


async def test_unsubscribe_of_a_channel_not_subscribed_still_replies(
    memory_server: AthenaServer,
) -> None:
    async with client(memory_server, "a") as c:
        reply = await c.request({"type": "unsubscribe", "organization_id": "never"})
        assert reply["status"] == "unsubscribed" and reply["organization_id"] == "never"
        await publish(memory_server, event("a", 1))
        assert seqs(await c.recv_events(1)) == [1]


async def test_ping_message_gets_pong(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        await c.send({"type": "ping"})
        assert await c.recv_raw() == '{"status":"pong"}'


async def test_websocket_ping_gets_pong(memory_server: AthenaServer) -> None:
    async with client(memory_server, "a") as c:
        waiter = await c.ws.ping()
        await asyncio.wait_for(waiter, 5)


async def test_many_clients_of_one_channel_each_get_every_event(
    memory_server: AthenaServer,
) -> None:
    clients: list[Client] = []
    async with client(memory_server, "shared") as c1, client(memory_server, "shared") as c2:
        clients = [c1, c2]
        async with client(memory_server, "other") as c3:
            await c3.request({"type": "subscribe", "organization_id": "shared"})
            clients.append(c3)
            for chunk in range(5):
                await publish(memory_server, [event("shared", chunk * 10 + i) for i in range(10)])
            for c in clients:
                assert seqs(await c.recv_events(50)) == list(range(1, 51))


@pytest.mark.parametrize(
    "number",
    [
        123456789012345678901234567890,
        -98765432109876543210987654321,
        18446744073709551616,
        -9223372036854775809,
    ],
)
async def test_integers_beyond_64_bits_are_kept_exactly_or_refused(
    server: AthenaServer, number: int
) -> None:
    """Never silently turned into a float: kept exactly, or refused with invalid_json."""
    async with client(server, "big") as c:
        status, body = await post_events(server, event("big", {"n": number}))
        if status == 201:
            [live] = await c.recv_events(1)
            assert canonical(live["data"]["payload"]) == canonical({"n": number})
        else:
            assert (status, body["error"]) == (400, "invalid_json"), body
            events, _ = await c.travel(organization_id="big")
            assert events == []
