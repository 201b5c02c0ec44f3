"""The JS client resumes after every kind of close and delivers each seq once, in order."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.clients_js._support import JsClient, publish_to, start_js_client
from tests.protocol._support import event, metric
from tests.support.servers import ServerProcess, http_url, running_server, ws_url

TOTAL = 10_000
BATCH = 250
CHANNELS = ("orders", "audit")


def batch(start: int, size: int) -> list[dict[str, object]]:
    """Events numbered start..start+size-1, alternating between the two channels."""
    return [event(CHANNELS[n % 2], {"n": n}) for n in range(start, start + size)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["ws", "global"])
async def test_a_client_resumes_across_three_kill_9_restarts_with_every_seq_once_in_order(
    node: str, js_clients: list[JsClient], tmp_path: Path, transport: str
) -> None:
    server = ServerProcess(
        ["--store", "sqlite", "--data-dir", str(tmp_path / "data")],
        log_path=tmp_path / "server.log",
    )
    with server:
        client = await start_js_client(
            node,
            transport,
            url=server.ws,
            client="reader",
            subscribe=[{"channel": name, "sinceSeq": 0} for name in CHANNELS],
            # Slow enough that the batches after each restart go in before it is back.
            backoff={"initialMs": 400, "maxMs": 1000},
        )
        js_clients.append(client)
        await client.next(lambda line: line["type"] == "state" and line["state"] == "live")
        published = 0
        for _restart in range(3):
            for _ in range(4):  # while the client is live
                await publish_to(server.base, batch(published, BATCH))
                published += BATCH
            server.kill()
            server.start()
            # Published while the client is cut off: it must fetch these by travel.
            for _ in range(4):
                await publish_to(server.base, batch(published, BATCH))
                published += BATCH
            # Back, caught up and live again before the next kill.
            await client.next(lambda line: line["type"] == "state" and line["state"] == "live")
        while published < TOTAL:
            await publish_to(server.base, batch(published, BATCH))
            published += BATCH
        per_channel = {name: TOTAL // 2 for name in CHANNELS}
        await client.wait_for_seqs(per_channel, within=60)
        closed = await client.close()

    for name in CHANNELS:
        assert client.seqs(name) == list(range(1, TOTAL // 2 + 1)), name
    payloads = [ln["payload"]["n"] for ln in client.lines if ln["type"] == "event"]
    assert sorted(payloads) == list(range(TOTAL))
    assert client.of_type("gap") == [] and client.of_type("reset") == []
    # One connection per server run: the client came back after each kill.
    assert len(client.of_type("connect")) == 4
    [epoch] = {ln["epoch"] for ln in client.of_type("connect")}  # sqlite keeps it
    assert closed["positions"] == {name: {"seq": TOTAL // 2, "epoch": epoch} for name in CHANNELS}


async def test_a_client_closed_with_4008_resumes_from_its_last_seq(
    node: str, js_clients: list[JsClient]
) -> None:
    total, payload = 600, "x" * 30_000  # 18 MB: more than the loopback buffers hold
    async with running_server(store="memory", slow_consumer_limit=64 * 1024) as srv:
        client = await start_js_client(
            node, url=ws_url(srv), client="slow", subscribe=[{"channel": "feed", "sinceSeq": 0}]
        )
        js_clients.append(client)
        await client.next_type("subscribed")
        await publish_to(http_url(srv, ""), [event("feed", "first")])
        await client.wait_for_seqs({"feed": 1})
        # A reader that stops reading: the server queues for it until the limit, then closes.
        client.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(0, total, 50):
                await publish_to(http_url(srv, ""), [event("feed", payload)] * 50)
            deadline = time.monotonic() + 20
            while await metric(srv, "athena_cdc_slow_consumer_closes_total") < 1:
                assert time.monotonic() < deadline, "the server never closed the slow reader"
                await asyncio.sleep(0.05)
        finally:
            client.proc.send_signal(signal.SIGCONT)
        await client.wait_for_seqs({"feed": total + 1}, within=60)
        await client.close()

    assert client.seqs("feed") == list(range(1, total + 2))
    disconnects = client.of_type("disconnect")
    assert [ln["code"] for ln in disconnects] == [4008], disconnects
    assert "since_seq" in disconnects[0]["reason"]
    assert len(client.of_type("connect")) == 2


async def test_many_channels_resume_under_a_low_server_rate_limit_without_loss(
    node: str, js_clients: list[JsClient]
) -> None:
    # 60 channels: a subscribe and a travel each, more than the server's burst of 100.
    channels = [f"c{n}" for n in range(60)]
    async with running_server(store="memory", client_rate_limit=10) as srv:
        await publish_to(http_url(srv, ""), [event(name, 1) for name in channels] * 2)
        client = await start_js_client(
            node,
            url=ws_url(srv),
            client="many",
            subscribe=[{"channel": name, "sinceSeq": 0} for name in channels],
        )
        js_clients.append(client)
        await client.next(lambda line: line["type"] == "state" and line["state"] == "live", 30)
        await publish_to(http_url(srv, ""), [event(name, 3) for name in channels])
        await client.wait_for_seqs({name: 3 for name in channels})
        await client.close()

    for name in channels:
        assert client.seqs(name) == [1, 2, 3], name
    assert client.of_type("disconnect") == [], "rate_limited is handled on the connection"
    assert len(client.of_type("subscribed")) == len(channels)


async def test_events_published_during_a_long_catch_up_come_once_in_order(
    node: str, js_clients: list[JsClient]
) -> None:
    backlog, live = 20_000, 2_000
    async with running_server(store="memory") as srv:
        for start in range(0, backlog, 5_000):
            await publish_to(
                http_url(srv, ""), [event("busy", n) for n in range(start, start + 5_000)]
            )
        client = await start_js_client(
            node,
            url=ws_url(srv),
            client="reader",
            pageSize=500,  # forty pages: live events arrive between and during them
            subscribe=[{"channel": "busy", "sinceSeq": 0}],
        )
        js_clients.append(client)
        await client.next_type("connect")
        for start in range(backlog, backlog + live, 50):
            await publish_to(
                http_url(srv, ""), [event("busy", n) for n in range(start, start + 50)]
            )
        await client.wait_for_seqs({"busy": backlog + live}, within=60)
        await client.close()

    assert client.seqs("busy") == list(range(1, backlog + live + 1))
    assert [ln["payload"] for ln in client.of_type("event")] == list(range(backlog + live))
    states = [ln["state"] for ln in client.of_type("state")]
    assert states[:1] == ["catching_up"] and "live" in states


async def test_a_server_that_goes_silent_is_left_and_the_client_resumes_when_it_is_back(
    node: str, js_clients: list[JsClient], tmp_path: Path
) -> None:
    server = ServerProcess(
        ["--store", "sqlite", "--data-dir", str(tmp_path / "data")],
        log_path=tmp_path / "server.log",
    )
    with server:
        client = await start_js_client(
            node,
            url=server.ws,
            client="reader",
            heartbeatMs=300,
            subscribe=[{"channel": "quiet", "sinceSeq": 0}],
        )
        js_clients.append(client)
        await client.next_type("subscribed")
        await publish_to(server.base, [event("quiet", 1)])
        await client.wait_for_seqs({"quiet": 1})
        # A frozen server: the TCP connection stays up, nothing answers, no close comes.
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            left = await client.next_type("disconnect", within=10)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        await publish_to(server.base, [event("quiet", 2)])
        await client.wait_for_seqs({"quiet": 2})
        await client.close()

    assert left["code"] == 1006 and "nothing heard" in left["reason"]
    assert client.seqs("quiet") == [1, 2]
