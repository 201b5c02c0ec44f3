"""Fixtures for the JavaScript client's tests: Node with clients/js installed, and the
clients a test starts (helpers in _support.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.clients_js._support import PACKAGE_DIR, JsClient
from tests.support.browser import chromium_executable
from tests.support.toolchain import ToolMissing, node_and_npm


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with clients/js's dev dependency installed (once per session)."""
    try:
        node_cmd, npm_cmd = node_and_npm()
    except ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    node_bin = node_cmd[0]
    # npm runs package scripts with whatever "node" is on PATH: make it this one.
    path = f"{Path(node_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        [*npm_cmd, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PACKAGE_DIR,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci failed in {PACKAGE_DIR}:\n{result.stdout}\n{result.stderr}")
    return node_bin


@pytest.fixture
async def js_clients() -> AsyncIterator[list[JsClient]]:
    """Clients started by a test, killed at its end whatever happened."""
    started: list[JsClient] = []
    yield started
    for client in started:
        if client.proc.returncode is None:
            client.proc.kill()
        await client.proc.wait()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium for playwright-core (which never downloads one): tests/support/browser.py's
    choice -- the machine's, else the npm registry's."""
    try:
        return chromium_executable()
    except ToolMissing as exc:
        pytest.fail(f"the browser test needs Chromium: {exc}", pytrace=False)
