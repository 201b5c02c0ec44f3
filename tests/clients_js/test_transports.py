"""Where the JS client puts the client name and the token: headers in Node, the URL in
browsers (which cannot set headers on a WebSocket; the server takes ?client= and ?token=)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.clients_js._support import DRIVER, NODE_FLAGS

CAPTURE = DRIVER.parent / "capture_upgrade.mjs"


async def upgrade_request(node: str, transport: str, **config: object) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        node,
        *NODE_FLAGS[transport],
        str(CAPTURE),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    request: dict[str, object] = json.loads(out)
    return request


@pytest.mark.parametrize("transport", ["ws", "global"])
async def test_in_node_the_name_and_token_go_in_headers(node: str, transport: str) -> None:
    request = await upgrade_request(node, transport, client="org 42", token="a.b.c")
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["x-athena-client"] == "org 42"
    assert headers["authorization"] == "Bearer a.b.c"
    assert request["url"] == "/ws?keep=1"


async def test_in_a_browser_the_name_and_token_go_in_the_url(node: str) -> None:
    request = await upgrade_request(
        node, "browser", client="org 42/é&x", token="a.b.c", credentials="query"
    )
    headers = request["headers"]
    assert isinstance(headers, dict) and isinstance(request["url"], str)
    assert "x-athena-client" not in headers and "authorization" not in headers
    url = urlsplit(request["url"])
    assert url.path == "/ws"
    assert parse_qs(url.query) == {"keep": ["1"], "client": ["org 42/é&x"], "token": ["a.b.c"]}
