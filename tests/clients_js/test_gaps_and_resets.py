"""What the JS client says when it cannot deliver a range: `gap` (retention) and `reset`
(a new epoch), and where it starts when told "from now"."""

from __future__ import annotations

from pathlib import Path

from tests.clients_js._support import JsClient, publish_to, start_js_client
from tests.protocol._support import event
from tests.support.servers import ServerProcess, http_url, running_server, ws_url


async def test_a_range_dropped_by_retention_is_one_gap_then_the_events_after_it(
    node: str, js_clients: list[JsClient]
) -> None:
    async with running_server(store="memory", retention_events=10) as srv:
        await publish_to(http_url(srv, ""), [event("g", n) for n in range(1, 26)])
        client = await start_js_client(
            node,
            url=ws_url(srv),
            client="reader",
            # A small page: the catch-up takes three travels, the gap in the first.
            pageSize=4,
            subscribe=[{"channel": "g", "sinceSeq": 5}],
        )
        js_clients.append(client)
        await client.next_type("subscribed")
        await publish_to(http_url(srv, ""), [event("g", 26)])
        await client.wait_for_seqs({"g": 26})
        await client.close()

    told = [ln for ln in client.lines if ln["type"] in ("gap", "event")]
    assert told[0] == {
        "type": "gap",
        "channel": "g",
        "fromSeq": 6,
        "toSeq": 15,
        "epoch": srv.log.epoch,
    }
    assert [(ln["seq"], ln["payload"]) for ln in told[1:]] == [(n, n) for n in range(16, 27)]


async def test_a_new_epoch_resets_the_channel_and_it_starts_over_from_seq_1(
    node: str, js_clients: list[JsClient], tmp_path: Path
) -> None:
    # The memory store starts a new log, under a new epoch, at every start.
    server = ServerProcess(["--store", "memory"], log_path=tmp_path / "server.log")
    with server:
        client = await start_js_client(
            node, url=server.ws, client="reader", subscribe=[{"channel": "r", "sinceSeq": 0}]
        )
        js_clients.append(client)
        await client.next_type("subscribed")
        await publish_to(server.base, [event("r", f"old {n}") for n in range(1, 4)])
        await client.wait_for_seqs({"r": 3})
        old_epoch = client.of_type("connect")[0]["epoch"]
        server.kill()
        server.start()
        await publish_to(server.base, [event("r", f"new {n}") for n in range(1, 3)])
        reset = await client.next_type("reset")
        await client.next(lambda line: line.get("payload") == "new 2")
        new_epoch = client.of_type("connect")[1]["epoch"]
        # A client that saved its position under the old epoch is reset on connecting.
        later = await start_js_client(
            node,
            url=server.ws,
            client="later",
            subscribe=[{"channel": "r", "sinceSeq": 3, "epoch": old_epoch}],
        )
        js_clients.append(later)
        await later.wait_for_seqs({"r": 2})
        positions = (await client.close())["positions"]
        await later.close()

    assert old_epoch != new_epoch
    assert reset == {
        "type": "reset",
        "channel": "r",
        "epoch": new_epoch,
        "previousEpoch": old_epoch,
        "lastSeq": 3,
    }
    told = [ln for ln in client.lines if ln["type"] in ("reset", "event")]
    assert [(ln["type"], ln.get("seq"), ln.get("payload")) for ln in told] == [
        ("event", 1, "old 1"),
        ("event", 2, "old 2"),
        ("event", 3, "old 3"),
        ("reset", None, None),
        ("event", 1, "new 1"),
        ("event", 2, "new 2"),
    ]
    assert all(ln["epoch"] == new_epoch for ln in told[4:])
    assert positions == {"r": {"seq": 2, "epoch": new_epoch}}
    told_later = [ln for ln in later.lines if ln["type"] in ("reset", "event")]
    assert [(ln["type"], ln.get("seq")) for ln in told_later] == [
        ("reset", None),
        ("event", 1),
        ("event", 2),
    ]


async def test_a_subscription_without_since_seq_delivers_only_what_comes_after_it(
    node: str, js_clients: list[JsClient]
) -> None:
    async with running_server(store="memory") as srv:
        await publish_to(http_url(srv, ""), [event("n", "before")] * 5)
        client = await start_js_client(
            node, url=ws_url(srv), client="reader", subscribe=[{"channel": "n"}]
        )
        js_clients.append(client)
        await client.next_type("subscribed")
        await publish_to(http_url(srv, ""), [event("n", "after")] * 2)
        await client.wait_for_seqs({"n": 7})
        positions = (await client.close())["positions"]

    assert [(ln["seq"], ln["payload"]) for ln in client.of_type("event")] == [
        (6, "after"),
        (7, "after"),
    ]
    assert positions == {"n": {"seq": 7, "epoch": srv.log.epoch}}
