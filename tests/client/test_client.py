"""The client against an in-process server: where a subscription starts, gaps, 4008,
merging live events into a catch-up, states, positions, refusals, the sync wrapper."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import athena_cdc.client
from athena_cdc.client import (
    Backoff,
    Event,
    Gap,
    Refused,
    State,
    connect,
    connect_sync,
)
from athena_cdc.config import Settings
from athena_cdc.server.app import AthenaServer
from tests.client._support import FAST, event_seqs, take, take_until, upto
from tests.protocol._support import event, post_events, publish, publish_many
from tests.support.servers import free_port, running_server, ws_url
from tests.support.tls import self_signed_certificate


async def test_a_retention_gap_is_yielded_as_exactly_that_gap() -> None:
    async with running_server(store="memory", retention_events=5) as srv:
        await publish_many(srv, "logs", range(20))
        async with connect(ws_url(srv), client="me", backoff=FAST) as c:
            await c.subscribe("logs", since_seq=3)
            gap, *events = await take(c, 6)
            assert gap == Gap("logs", 4, 15, gap.epoch)  # type: ignore[union-attr]
            assert event_seqs(events) == [16, 17, 18, 19, 20]
            assert c.position("logs").seq == 20  # type: ignore[union-attr]


async def test_a_slow_consumer_closed_with_4008_resumes_without_loss() -> None:
    total = 10_000
    async with running_server(store="memory", slow_consumer_limit=64 * 1024) as srv:
        notes: list[str] = []
        async with connect(
            ws_url(srv), client="me", backoff=FAST, buffer=1,
            on_state=lambda state, detail: notes.append(detail),
        ) as c:
            await c.subscribe("flood", since_seq=0)
            await asyncio.wait_for(c.wait_live(), 10)
            # The application reads nothing while 20 MB arrive: the server gives up on
            # the connection (4008) and the client resumes from its last seq.
            for _ in range(total // 250):
                await publish(srv, [event("flood", "x" * 2_000)] * 250)
            items = await take(c, total, within=60)
            assert event_seqs(items) == list(range(1, total + 1))
            assert any("4008" in note for note in notes), notes
            assert c.connections >= 2


async def test_live_events_that_arrive_during_a_catch_up_are_merged_in_order() -> None:
    async with running_server(store="memory") as srv:
        await publish_many(srv, "busy", range(3_000))
        async with connect(ws_url(srv), client="me", backoff=FAST, page_size=100) as c:
            await c.subscribe("busy", since_seq=0)

            async def produce() -> None:
                for n in range(40):
                    await publish_many(srv, "busy", [f"live {n}"] * 25)

            producer = asyncio.create_task(produce())
            first = await take(c, 200)  # catching up, page after page, while events come
            assert c.state is State.CATCHING_UP
            await producer
            items = first + await take_until(c, upto("busy", 4_000))
            assert event_seqs(items) == list(range(1, 4_001))
            await asyncio.wait_for(c.wait_live(), 10)


async def test_where_a_subscription_starts_now_last_n_or_since_a_time() -> None:
    async with running_server(store="memory") as srv:
        published = []
        for channel in ("now", "last", "since"):
            published = await publish_many(srv, channel, range(10))
        async with connect(ws_url(srv), client="me", backoff=FAST) as c:
            await c.subscribe("now")
            await c.subscribe("last", last=3)
            await c.subscribe("since", since_ts_ms=published[6]["ts_ms"])
            await asyncio.wait_for(c.wait_live(), 10)
            await publish_many(srv, "now", ["new"])
            items = await take_until(c, upto("now", 11))
            assert event_seqs(items, "now") == [11]
            assert event_seqs(items, "last") == [8, 9, 10]
            # ts_ms may be equal for several events of one publish: the first with it
            first_at = min(p["seq"] for p in published if p["ts_ms"] >= published[6]["ts_ms"])
            assert event_seqs(items, "since") == list(range(first_at, 11))
            assert c.positions["now"].seq == 11


async def test_a_channel_with_no_events_starts_at_seq_0_and_follows_live(
    memory_server: AthenaServer,
) -> None:
    srv = memory_server
    async with connect(ws_url(srv), client="me", backoff=FAST) as c:
        await c.subscribe("empty", last=5)
        await asyncio.wait_for(c.wait_live(), 10)
        await publish_many(srv, "empty", ["first"])
        [item] = await take(c, 1)
        assert isinstance(item, Event) and (item.seq, item.payload) == (1, "first")


async def test_the_own_channel_is_delivered_only_when_subscribed_and_unsubscribe_stops(
    memory_server: AthenaServer,
) -> None:
    srv = memory_server
    async with connect(ws_url(srv), client="me", backoff=FAST) as c:
        await c.subscribe("other", since_seq=0)
        await asyncio.wait_for(c.wait_live(), 10)
        await publish(srv, [event("me", 1), event("other", 2)])
        [item] = await take(c, 1)
        assert isinstance(item, Event) and item.channel == "other"
        await c.unsubscribe("other")
        await c.subscribe("me", since_seq=0)
        await publish(srv, [event("other", 3), event("me", 4)])
        items = await take(c, 2)
        assert [(i.channel, i.seq) for i in items] == [("me", 1), ("me", 2)]  # type: ignore[union-attr]


async def test_payloads_come_back_exactly_big_integers_and_key_order_included() -> None:
    async with running_server(store="memory") as srv:
        body = b'[{"organization_id":"x","payload":{"z":123456789012345678901234567890,"a":0.1}}]'
        status, _ = await post_events(srv, data=body)
        assert status == 201
        async with connect(ws_url(srv), client="me", backoff=FAST) as c:
            await c.subscribe("x", since_seq=0)
            [item] = await take(c, 1)
            assert isinstance(item, Event)
            assert json.dumps(item.payload) == '{"z": 123456789012345678901234567890, "a": 0.1}'


async def test_states_go_connecting_then_live_and_connecting_again_when_the_server_goes() -> None:
    port = free_port()
    async with connect(f"ws://127.0.0.1:{port}/ws", client="me",
                       backoff=Backoff(initial=0.05, maximum=0.1)) as c:
        await c.subscribe("ch", since_seq=0)
        await asyncio.sleep(0.3)
        assert c.state is State.CONNECTING and c.connections == 0
        srv = AthenaServer(Settings(store="memory", port=port))
        await srv.start()
        try:
            await publish_many(srv, "ch", [1])
            await asyncio.wait_for(c.wait_live(), 10)
            assert c.channel_state("ch") is State.LIVE
            assert event_seqs(await take(c, 1)) == [1]
        finally:
            await srv.stop()
        await asyncio.sleep(0.3)
        assert c.state is State.CONNECTING
    assert c.state is State.CLOSED  # type: ignore[comparison-overlap]


async def test_a_client_name_the_server_refuses_ends_the_iteration_with_refused(
    memory_server: AthenaServer,
) -> None:
    async with connect(ws_url(memory_server), client="n" * 300, backoff=FAST) as c:
        with pytest.raises(Refused) as refused:
            await asyncio.wait_for(anext(c), 10)
        assert refused.value.status == 400 and "Invalid X-Athena-Client" in str(refused.value)
        assert c.state is State.CLOSED


async def test_the_sync_wrapper_iterates_and_reports_positions(
    memory_server: AthenaServer,
) -> None:
    await publish_many(memory_server, "ch", ["a", "b", "c"])

    def use() -> list[tuple[int, object]]:
        with connect_sync(ws_url(memory_server), client="me", backoff=FAST) as c:
            c.subscribe("ch", since_seq=1)
            got = [c.next(timeout=10), c.next(timeout=10)]
            assert c.position("ch").seq == 3  # type: ignore[union-attr]
            with pytest.raises(TimeoutError):
                c.next(timeout=0.2)
            return [(i.seq, i.payload) for i in got]  # type: ignore[union-attr]

    assert await asyncio.to_thread(use) == [(2, "b"), (3, "c")]


def test_importing_the_client_imports_neither_the_server_nor_its_dependencies() -> None:
    code = (
        "import sys, athena_cdc.client, athena_cdc.client.terminal\n"
        "heavy = [m for m in ('aiohttp', 'orjson', 'redis', 'jwt', 'athena_cdc.server',"
        " 'athena_cdc.log', 'athena_cdc.config') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


async def test_requests_refused_as_rate_limited_are_sent_again_until_every_channel_is_live(
) -> None:
    # 20 messages/s in bursts of 200: subscribing and travelling 150 channels is 300.
    async with running_server(store="memory", client_rate_limit=20) as srv:
        channels = [f"ch{n}" for n in range(150)]
        await publish(srv, [event(channel, channel) for channel in channels])
        async with connect(ws_url(srv), client="me", backoff=FAST) as c:
            for channel in channels:
                await c.subscribe(channel, since_seq=0)
            items = await take(c, 150, within=60)
            assert sorted((i.channel, i.seq) for i in items) == sorted(  # type: ignore[union-attr]
                (channel, 1) for channel in channels
            )
            await asyncio.wait_for(c.wait_live(), 30)
            assert c.connections == 1


async def test_a_wss_server_with_a_private_ca_is_reached_with_ssl_and_cafile(
    tmp_path: Path,
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_server(store="memory", tls_cert=str(cert), tls_key=str(key)) as srv:
        url = f"wss://127.0.0.1:{srv.port}/ws"
        published = await asyncio.to_thread(
            athena_cdc.client.publish, url, [("secure", 1)], ssl=trust
        )
        assert [p.seq for p in published] == [1]
        async with connect(url, client="me", backoff=FAST, ssl=trust) as c:
            await c.subscribe("secure", since_seq=0)
            assert event_seqs(await take(c, 1)) == [1]
        command = [sys.executable, "-m", "athena_cdc", "publish", "secure", "2", "--url", url]
        untrusted = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                            text=True, timeout=60)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        trusted = await asyncio.to_thread(subprocess.run, [*command, "--cafile", str(cert)],
                                          capture_output=True, text=True, timeout=60)
        assert (trusted.returncode, trusted.stdout) == (0, "2\n"), trusted.stderr
