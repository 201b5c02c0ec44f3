"""The Node example of clients/js/README.md, run as written against a real server."""

from __future__ import annotations

import asyncio
import re

from tests.clients_js._support import PACKAGE_DIR, publish_to
from tests.protocol._support import event
from tests.support.servers import http_url, running_server, ws_url

README = PACKAGE_DIR / "README.md"


def node_example() -> str:
    section = README.read_text().split("## Use it in Node", 1)[1]
    match = re.search(r"```js\n(.*?)```", section, re.S)
    assert match is not None, "no js block under 'Use it in Node'"
    return match.group(1)


async def test_the_readme_node_example_prints_events_after_since_seq_then_live(node: str) -> None:
    code = node_example()
    assert 'from "athena-cdc-client"' in code and "ws://localhost:4053/ws" in code
    async with running_server(store="memory") as srv:
        await publish_to(http_url(srv, ""), [event("org_43", n) for n in range(1, 122)])
        # The example as written; only the package is found by path, and the server's port.
        runnable = code.replace(
            '"athena-cdc-client"', f'"{(PACKAGE_DIR / "src" / "index.js").as_uri()}"'
        ).replace("ws://localhost:4053/ws", ws_url(srv))
        proc = await asyncio.create_subprocess_exec(
            node,
            "--input-type=module",
            "-e",
            runnable,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            lines = []
            while "state: live" not in lines:
                raw = await asyncio.wait_for(proc.stdout.readline(), 15)
                assert raw, (await proc.communicate())[1].decode()
                lines.append(raw.decode().rstrip("\n"))
            await publish_to(http_url(srv, ""), [event("org_43", 122)])
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 15)).decode().rstrip())
        finally:
            proc.kill()
            await proc.wait()
    assert lines == ["state: catching_up", "org_43 121 121", "state: live", "org_43 122 122"]
