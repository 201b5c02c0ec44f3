"""The JS client in a real browser (headless Chromium): the browser's own WebSocket, the
client name and token in the URL (?client=, ?token=), and resumption across a kill -9."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from tests.clients_js._support import JsClient, publish_to, start_browser_client
from tests.protocol._support import event
from tests.support.servers import ServerProcess

SECRET = "js-client-browser-test-secret-32-bytes-or-more"


def token(**claims: object) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


@pytest.mark.timeout(180)
async def test_in_chromium_the_client_resumes_across_a_kill_9_with_every_seq_once(
    node: str, chromium: str, js_clients: list[JsClient], tmp_path: Path
) -> None:
    producer = token(publish=["*"])
    server = ServerProcess(
        ["--store", "sqlite", "--data-dir", str(tmp_path / "data"), "--jwt-secret", SECRET],
        log_path=tmp_path / "server.log",
    )
    with server:
        client = await start_browser_client(
            node,
            chromium,
            url=server.ws,
            client="web",
            tokenFromStdin=True,
            backoff={"initialMs": 300, "maxMs": 1000},
            subscribe=[{"channel": "feed", "sinceSeq": 0}],
        )
        js_clients.append(client)

        async def give_token() -> None:  # getToken is asked before each connection
            await client.next_type("need_token", within=30)
            client.send({"token": token(channels=["web", "feed"])})

        await give_token()
        await client.next_type("subscribed", within=30)
        await publish_to(server.base, [event("feed", n) for n in range(50)], producer)
        await client.wait_for_seqs({"feed": 50})
        server.kill()
        server.start()
        await publish_to(server.base, [event("feed", n) for n in range(50, 100)], producer)
        await give_token()
        await client.wait_for_seqs({"feed": 100})
        closed = await client.close()

    assert client.seqs("feed") == list(range(1, 101))
    assert [ln["payload"] for ln in client.of_type("event")] == list(range(100))
    assert client.of_type("page_error") == []
    # A browser's WebSocket takes no headers: name and token went in the URL.
    assert len(client.of_type("connect")) == 2
    assert closed["positions"]["feed"]["seq"] == 100
