"""The WebSocket ``publish`` message: POST /events' rules over a connection the producer keeps."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import Client, client, event, post_events, seqs
from tests.support.servers import running_server, server_process

SECRET = "athena-test-secret-of-at-least-32-bytes"


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + 3600), **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def travel_all(server: AthenaServer, channel: str) -> list[int]:
    async with client(server, "reader") as c:
        events, _ = await c.travel(organization_id=channel, since_seq=0, limit=50_000)
        return seqs(events)


async def next_answer(c: Client) -> dict[str, Any]:
    """The next publish answer, skipping the live events the producer may also receive."""
    while True:
        message = await c.recv()
        if "data" not in message:
            return message


async def test_a_publish_reaches_subscribers_on_every_connection_in_seq_order_and_is_answered_with_its_seqs(  # noqa: E501
    server: AthenaServer,
) -> None:
    async with client(server, "producer") as producer, client(server, "reader") as reader:
        for c in (producer, reader):
            assert (await c.request({"type": "subscribe", "organization_id": "t1"}))[
                "status"
            ] == "subscribed"
        await producer.send(
            {"type": "publish", "id": 7, "events": [event("t1", {"n": 1}), event("t1", {"n": 2})]}
        )
        # The producer is a subscriber too: its answer and the two events, in some order.
        own = [await producer.recv() for _ in range(3)]
        [answer] = [m for m in own if "data" not in m]
        assert list(answer) == ["status", "id", "events"]
        assert answer["status"] == "published" and answer["id"] == 7
        acks = answer["events"]
        assert [(a["organization_id"], a["seq"]) for a in acks] == [("t1", 1), ("t1", 2)]
        assert all(isinstance(a["ts_ms"], int) for a in acks)
        for got in ([m for m in own if "data" in m], await reader.recv_events(2)):
            assert seqs(got) == [1, 2]
            assert [m["data"]["payload"] for m in got] == [{"n": 1}, {"n": 2}]
    assert await travel_all(server, "t1") == [1, 2]


async def test_a_single_event_publish_needs_no_array_and_an_id_is_optional(
    memory_server: AthenaServer,
) -> None:
    async with client(memory_server, "producer") as producer:
        answer = await producer.request({"type": "publish", "events": event("one", "x")})
        assert answer["status"] == "published" and answer["id"] is None
        assert [a["seq"] for a in answer["events"]] == [1]
        answer = await producer.request({"type": "publish", "id": "a-b", "events": event("one", 2)})
        assert answer["id"] == "a-b" and answer["events"][0]["seq"] == 2


async def test_pipelined_publishes_are_answered_in_the_order_sent(server: AthenaServer) -> None:
    async with client(server, "producer") as producer:
        for n in range(200):
            # Errors among them keep their place too.
            events: Any = event(f"c{n % 3}", n) if n % 50 != 7 else {"payload": n}
            await producer.send({"type": "publish", "id": n, "events": events})
        answers = [await producer.recv(within=20) for _ in range(200)]
    assert [a["id"] for a in answers] == list(range(200))
    assert [a["status"] for a in answers] == [
        "error" if n % 50 == 7 else "published" for n in range(200)
    ]
    per_channel: dict[str, list[int]] = {}
    for a in answers:
        for ack in a.get("events", []):
            per_channel.setdefault(ack["organization_id"], []).append(ack["seq"])
    for channel, got in per_channel.items():
        assert got == list(range(1, len(got) + 1)), channel
        assert await travel_all(server, channel) == got


async def test_a_batch_with_one_bad_event_appends_nothing_and_names_it_as_post_does(
    server: AthenaServer,
) -> None:
    batch = [event("b", 1), {"organization_id": "", "payload": 2}, event("b", 3)]
    status, posted = await post_events(server, batch)
    async with client(server, "producer") as producer:
        answer = await producer.request({"type": "publish", "id": 1, "events": batch})
    assert status == 400
    assert answer == {"status": "error", "id": 1, **posted}
    assert posted["error"] == "invalid_event" and posted["index"] == 1
    assert await travel_all(server, "b") == []


@pytest.mark.parametrize(
    ("events", "code"),
    [
        ([event("d", 1), "not an event"], "invalid_event"),
        ({"organization_id": 5, "payload": 1}, "invalid_event"),
        ({"organization_id": "d"}, "invalid_event"),
        ({"organization_id": "d\n", "payload": 1}, "invalid_event"),
        ([0] * 10_001, "too_many_events"),  # the count is checked first
    ],
)
async def test_a_bad_publish_gets_the_error_post_gets(
    memory_server: AthenaServer, events: Any, code: str
) -> None:
    _, posted = await post_events(memory_server, events)
    async with client(memory_server, "producer") as producer:
        answer = await producer.request({"type": "publish", "id": "x", "events": events})
    assert posted["error"] == code
    assert answer == {"status": "error", "id": "x", **posted}


async def test_a_payload_nested_too_deep_gets_post_s_invalid_json(
    memory_server: AthenaServer,
) -> None:
    deep = "[" * 300 + "]" * 300
    single = f'{{"organization_id":"d","payload":{deep}}}'
    status, posted = await post_events(memory_server, data=single.encode())
    async with client(memory_server, "producer") as producer:
        await producer.send_raw(f'{{"type":"publish","id":3,"events":{single}}}')
        answer = await producer.recv()
    assert status == 400 and posted["error"] == "invalid_json"
    assert answer == {"status": "error", "id": 3, **posted}


async def test_text_that_is_not_json_is_invalid_json_and_the_connection_goes_on(
    memory_server: AthenaServer,
) -> None:
    async with client(memory_server, "producer") as producer:
        for bad in ('{"type":"publish","events":{"organization_id":"d","payload":NaN}}', "{"):
            await producer.send_raw(bad)
            answer = await producer.recv()
            assert answer["status"] == "error" and answer["error"] == "invalid_json"
        await producer.ping()
    assert await travel_all(memory_server, "d") == []


async def test_big_integers_and_unknown_event_fields_are_kept_and_ignored_as_post_does(
    memory_server: AthenaServer,
) -> None:
    big = "123456789012345678901234567890"
    async with client(memory_server, "producer") as producer:
        await producer.request({"type": "subscribe", "organization_id": "big"})
        await producer.send_raw(
            f'{{"type":"publish","id":1,"events":{{"organization_id":"big",'
            f'"payload":{{"n":{big}}},"extra":[1]}}}}'
        )
        first = await producer.recv_raw()
        second = await producer.recv_raw()
    delivered = next(m for m in (first, second) if '"data"' in m)
    assert f'"payload":{{"n":{big}}}}}' in delivered
    assert "extra" not in delivered


async def test_an_invalid_id_is_refused_before_anything_is_appended(
    memory_server: AthenaServer,
) -> None:
    async with client(memory_server, "producer") as producer:
        for bad_id in (-1, 1.5, [1], "", "x" * 257):
            message = {"type": "publish", "id": bad_id, "events": event("i", 1)}
            answer = await producer.request(message)
            assert answer["error"] == "invalid_field" and answer["field"] == "id", answer
        answer = await producer.request({"type": "publish", "id": 1})
        assert answer["error"] == "invalid_event" and answer["id"] == 1
    assert await travel_all(memory_server, "i") == []


async def test_with_auth_a_token_without_the_publish_claim_is_forbidden_and_appends_nothing(
    tmp_path: Path,
) -> None:
    async with running_server(store="memory", jwt_secret=SECRET) as server:
        reader_only = bearer(token(channels=["*"]))
        async with client(server, "t", headers=reader_only) as c:
            answer = await c.request({"type": "publish", "id": 1, "events": event("t", 1)})
            assert answer["status"] == "error" and answer["error"] == "forbidden"
            assert answer["id"] == 1
        narrow = bearer(token(channels=["*"], publish=["t"]))
        async with client(server, "t", headers=narrow) as c:
            answer = await c.request(
                {"type": "publish", "id": 2, "events": [event("t", 1), event("u", 2)]}
            )
            assert answer["error"] == "forbidden" and "'u'" in answer["message"]
            ok = await next_answer(await _sent(c, {"type": "publish", "events": event("t", 3)}))
            assert ok["status"] == "published" and ok["events"][0]["seq"] == 1
        async with client(server, "r", headers=reader_only) as c:
            events, _ = await c.travel(organization_id="u", since_seq=0)
            assert events == []


async def _sent(c: Client, message: Any) -> Client:
    await c.send(message)
    return c


async def test_with_a_publish_key_the_producer_sends_it_on_the_upgrade() -> None:
    async with running_server(store="memory", publish_key="k" * 32) as server:
        async with client(server, "p") as without:
            answer = await without.request({"type": "publish", "id": 1, "events": event("k", 1)})
            assert answer["error"] == "unauthorized" and "X-Athena-Key" in answer["message"]
        async with client(server, "p", headers={"X-Athena-Key": "k" * 32}) as keyed:
            answer = await keyed.request({"type": "publish", "id": 2, "events": event("k", 1)})
            assert answer["status"] == "published"


async def test_publishes_over_the_rate_are_refused_by_events_and_the_rest_append() -> None:
    async with running_server(store="memory", publish_rate_limit=10.0) as server:
        async with client(server, "p") as producer:
            # A burst of ten seconds' worth: 100 events, then nothing more.
            answer = await producer.request(
                {"type": "publish", "id": 1, "events": [event("r", n) for n in range(100)]}
            )
            assert answer["status"] == "published"
            refused = await producer.request({"type": "publish", "id": 2, "events": event("r", 0)})
            assert refused["error"] == "rate_limited" and refused["id"] == 2
            # Other messages have their own limit (--client-rate-limit).
            await producer.ping()
        assert len(await travel_all(server, "r")) == 100


async def test_publishes_do_not_use_up_the_client_rate_limit() -> None:
    async with (
        running_server(store="memory", client_rate_limit=1.0) as server,
        client(server, "p") as producer,
    ):
        for n in range(30):
            await producer.send({"type": "publish", "id": n, "events": event("q", n)})
        answers = [await producer.recv() for _ in range(30)]
        assert all(a["status"] == "published" for a in answers)


async def test_a_publish_answered_published_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with server_process("--store", "sqlite", "--data-dir", str(data)) as proc:
        async with connect(proc.ws, additional_headers={"X-Athena-Client": "p"}) as ws:
            await ws.recv()  # subscribed
            for n in range(50):
                await ws.send(json.dumps({"type": "publish", "id": n, "events": event("k9", n)}))
            answers = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(50)]
            assert [a["status"] for a in answers] == ["published"] * 50
            proc.kill()
    with server_process("--store", "sqlite", "--data-dir", str(data)) as proc:
        async with connect(proc.ws, additional_headers={"X-Athena-Client": "r"}) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "travel", "organization_id": "k9", "since_seq": 0}))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(51)]
    assert [m["data"]["payload"] for m in got[:50]] == list(range(50))
    assert got[50]["status"] == "travel_complete"
