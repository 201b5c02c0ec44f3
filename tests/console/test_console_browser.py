"""The console in a real browser (headless Chromium) against a real server process.

Each test saves a screenshot of what it checked (see ``artifacts``); the session's
temporary directory, or ``$ATHENA_CDC_ARTIFACTS``. With ``ATHENA_CDC_UPDATE_SCREENSHOT=1``
the channel view's screenshot also replaces docs/img/console.png (the README's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from websockets.sync.client import ClientConnection, connect

from tests.console.browser import artifacts_dir, chromium_path
from tests.console.ops_http import publish
from tests.support.servers import ServerProcess, server_process

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "console.png"
OPS_KEY = "browser-test-ops-key-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with server_process("--store", "memory", "--retention-events", "10") as proc:
        yield proc


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = artifacts_dir(tmp_path_factory.getbasetemp() / "console-screenshots")
    print(f"console screenshots: {path}")
    return path


class Console:
    """A page of the console, and every console error it logged."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, view: str) -> Page:
        self.page.goto(f"{self.base}/console#/{view}")
        return self.page


@pytest.fixture
def console(browser: Browser, server: ServerProcess) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = Console(context.new_page(), server.base)
    yield page
    context.close()
    assert page.errors == [], page.errors


@contextlib.contextmanager
def own_client(server: ServerProcess, name: str) -> Iterator[ClientConnection]:
    """A WebSocket client of the test's own, subscribed."""
    with connect(f"{server.ws}?client={name}", max_queue=None, close_timeout=1) as ws:
        assert '"subscribed"' in str(ws.recv(timeout=5))
        yield ws


def test_every_view_loads_without_console_errors(
    console: Console, server: ServerProcess, artifacts: Path
) -> None:
    publish(server, [("orders", {"order": n, "total": 9.5 * n}) for n in range(1, 6)])
    publish(server, [("billing", {"invoice": 1})])
    with own_client(server, "views-client"):
        page = console.open("server")
        expect(page.locator("#server-cards .card").first).to_contain_text("version")
        expect(page.locator("#server-cards")).to_contain_text("memory")
        page.wait_for_timeout(2500)  # a few samples for the chart
        page.screenshot(path=artifacts / "server.png", full_page=True)

        page = console.open("channels")
        expect(page.locator("#channels-table tbody")).to_contain_text("orders")
        page.fill("#channel-search", "bill")
        expect(page.locator("#channels-table tbody tr")).to_have_count(1)
        expect(page.locator("#channels-table tbody")).to_contain_text("billing")
        page.fill("#channel-search", "")
        expect(page.locator("#channels-table tbody")).to_contain_text("orders")
        page.screenshot(path=artifacts / "channels.png", full_page=True)

        page.click("#channels-table a:text-is('orders')")
        expect(page).to_have_url(f"{server.base}/console#/channel/orders")
        expect(page.locator("#tail-status")).to_have_text("live")
        expect(page.locator("#tail .event[data-seq='5']")).to_contain_text('"total": 47.5')
        page.screenshot(path=artifacts / "channel.png", full_page=True)

        page = console.open("connections")
        expect(page.locator("#connections-table tbody")).to_contain_text("views-client")
        page.screenshot(path=artifacts / "connections.png", full_page=True)


def test_an_event_published_over_http_appears_in_the_tail_within_a_second(
    console: Console, server: ServerProcess, artifacts: Path
) -> None:
    page = console.open("channel/live-orders")
    expect(page.locator("#tail-status")).to_have_text("live")
    started = time.monotonic()
    (sent,) = publish(server, [("live-orders", {"sku": "A-17", "qty": 3})])
    event = page.locator(f"#tail .event[data-seq='{sent['seq']}']")
    expect(event).to_contain_text('"sku": "A-17"', timeout=1000)
    assert time.monotonic() - started < 1.0
    expect(event.locator("pre")).to_have_text('{\n  "sku": "A-17",\n  "qty": 3\n}')
    page.screenshot(path=artifacts / "tail.png", full_page=True)


def test_a_paused_tail_holds_events_until_it_resumes(
    console: Console, server: ServerProcess
) -> None:
    page = console.open("channel/paused")
    expect(page.locator("#tail-status")).to_have_text("live")
    page.click("#tail-pause")
    publish(server, [("paused", {"n": 1}), ("paused", {"n": 2})])
    expect(page.locator("#tail-status")).to_have_text("paused, 2 waiting")
    expect(page.locator("#tail .event[data-seq]")).to_have_count(0)
    page.click("#tail-pause")
    expect(page.locator("#tail .event[data-seq]")).to_have_count(2)
    expect(page.locator("#tail-status")).to_have_text("live")


def test_the_travel_form_returns_the_expected_rows_pages_and_shows_gaps(
    console: Console, server: ServerProcess, artifacts: Path
) -> None:
    publish(server, [("travels", {"n": n}) for n in range(1, 15)])  # keeps seqs 5..14
    page = console.open("channel/travels")
    page.fill("#travel-since-seq", "6")
    page.fill("#travel-limit", "3")
    page.click("#travel-form button[type=submit]")
    rows = page.locator("#travel-table tbody tr")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.seq)") == ["7", "8", "9"]
    expect(rows.first).to_contain_text('"n": 7')
    expect(page.locator("#travel-summary")).to_contain_text("3 events, after seq 6; more follow")
    page.click("#travel-next")
    expect(rows.first).to_have_attribute("data-seq", "10")
    page.click("#travel-next")
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.seq)") == ["13", "14"]
    expect(page.locator("#travel-next")).to_be_hidden()

    page.fill("#travel-since-seq", "0")
    page.click("#travel-form button[type=submit]")
    expect(page.locator("#travel-gaps")).to_have_text("gap: seqs 1\u20134 are not in the log")
    expect(rows.first).to_have_attribute("data-seq", "5")
    page.screenshot(path=artifacts / "travel.png", full_page=True)
    if os.environ.get("ATHENA_CDC_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / "travel.png", README_SCREENSHOT)


def test_the_connections_table_shows_the_tests_own_client(
    console: Console, server: ServerProcess, artifacts: Path
) -> None:
    with own_client(server, "browser-test-client") as ws:
        host, port = ws.socket.getsockname()[:2]
        page = console.open("connections")
        row = page.locator("#connections-table tr[data-client='browser-test-client']")
        expect(row).to_contain_text(f"{host}:{port}")
        expect(row).to_contain_text("browser-test-client")
        page.screenshot(path=artifacts / "connections-own-client.png", full_page=True)


def test_with_protect_ops_the_page_asks_for_a_token_and_then_shows_the_server(
    browser: Browser, artifacts: Path
) -> None:
    with server_process("--store", "memory", "--protect-ops", "true", "--ops-key", OPS_KEY) as proc:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{proc.base}/console#/server")
        expect(page.locator("#banner")).to_contain_text("Enter an ops token")
        page.fill("#token", OPS_KEY)
        page.click("#token-form button")
        expect(page.locator("#server-cards")).to_contain_text("memory")
        expect(page.locator("#banner")).to_be_hidden()
        page.reload()  # the token is kept for the tab (sessionStorage)
        expect(page.locator("#server-cards")).to_contain_text("memory")
        page.screenshot(path=artifacts / "protected.png", full_page=True)
        context.close()
    # The browser reports each refused request; nothing else may fail.
    assert errors and all("401" in e for e in errors), errors


def test_a_tail_whose_server_restarts_reconnects_and_shows_what_it_missed(
    browser: Browser, tmp_path: Path
) -> None:
    args = ["--store", "sqlite", "--data-dir", str(tmp_path)]
    first = ServerProcess(args)
    with first:
        publish(first, [("restarts", {"n": 1})])
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{first.base}/console#/channel/restarts")
        expect(page.locator("#tail .event[data-seq='1']")).to_be_visible()
    expect(page.locator("#tail-status")).to_contain_text("retrying")
    with ServerProcess(args, port=first.port) as second:
        publish(second, [("restarts", {"n": 2}), ("restarts", {"n": 3})])
        expect(page.locator("#tail .event[data-seq='3']")).to_be_visible(timeout=15_000)
        expect(page.locator("#tail-status")).to_have_text("live")
        assert page.locator("#tail .event[data-seq]").count() == 3
        expect(page.locator("#tail .gap")).to_have_count(0)
        context.close()
    # Only the failed reconnection attempts while the server was down.
    assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in errors), errors
