"""Who may read the ops API and the console page (real server processes, real HTTP)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.console.ops_http import get_json, ok_json, publish
from tests.support.servers import ServerProcess, server_process

SECRET = "console-test-secret-of-at-least-32-bytes"
OPS_KEY = "console-ops-key-of-some-length"
API_PATHS = ["/api/stats", "/api/channels", "/api/connections"]


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + 600), **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def protected() -> Iterator[ServerProcess]:
    with server_process(
        "--store",
        "memory",
        "--jwt-secret",
        SECRET,
        "--protect-ops",
        "true",
        "--ops-key",
        OPS_KEY,
    ) as proc:
        yield proc


@pytest.mark.parametrize("path", API_PATHS)
def test_with_protect_ops_the_api_is_401_without_credentials_and_403_without_admin(
    protected: ServerProcess, path: str
) -> None:
    status, body = get_json(protected, path)
    assert (status, body["error"]) == (401, "unauthorized"), body
    status, body = get_json(protected, path, token="not-a-jwt")
    assert (status, body["error"]) == (401, "unauthorized"), body
    status, body = get_json(protected, path, token=token(channels=["*"]))
    assert (status, body["error"]) == (403, "forbidden"), body
    assert "admin" in body["message"]


@pytest.mark.parametrize("path", API_PATHS)
def test_with_protect_ops_an_admin_token_or_the_ops_key_reads_the_api(
    protected: ServerProcess, path: str
) -> None:
    ok_json(protected, path, token=token(admin=True))
    ok_json(protected, path, token=OPS_KEY)


def test_a_travel_over_the_api_needs_the_same_credentials(protected: ServerProcess) -> None:
    publish_with_token(protected, "secret-channel")
    params = {"channel": "secret-channel"}
    assert get_json(protected, "/api/events", params)[0] == 401
    assert get_json(protected, "/api/events", params, token=token(channels=["*"]))[0] == 403
    body = ok_json(protected, "/api/events", params, token=OPS_KEY)
    assert body["events"][0]["data"]["payload"] == {"pin": 1234}


def publish_with_token(proc: ServerProcess, channel: str) -> None:
    request = urllib.request.Request(
        proc.base + "/events",
        data=b'[{"organization_id":"%s","payload":{"pin":1234}}]' % channel.encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token(publish=['*'])}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def test_the_page_itself_is_served_without_credentials_and_holds_no_data(
    protected: ServerProcess,
) -> None:
    with urllib.request.urlopen(protected.base + "/console", timeout=10) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/html"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "secret-channel" not in page and '<script type="module"' in page
    with urllib.request.urlopen(protected.base + "/console/main.js", timeout=10) as response:
        assert response.headers.get_content_type() == "text/javascript"
    status, body = get_json(protected, "/console/nothing-here.js")
    assert (status, body["error"]) == (404, "Not Found")


def test_with_auth_on_the_api_is_protected_even_without_protect_ops() -> None:
    """/metrics stays open then (aggregates), but the API shows names and payloads."""
    with server_process("--store", "memory", "--jwt-secret", SECRET) as proc:
        assert get_json(proc, "/api/channels")[0] == 401
        assert get_json(proc, "/api/channels", token=token(channels=["*"]))[0] == 403
        ok_json(proc, "/api/channels", token=token(admin=True))
        with urllib.request.urlopen(proc.base + "/metrics", timeout=10) as response:
            assert response.status == 200


def test_with_auth_off_and_ops_open_the_api_is_open(tmp_path: Path) -> None:
    with server_process("--store", "sqlite", "--data-dir", str(tmp_path)) as proc:
        publish(proc, [("open", {"n": 1})])
        assert ok_json(proc, "/api/events", {"channel": "open"})["count"] == 1


def test_after_a_restart_a_channel_not_in_memory_is_found_by_its_exact_name(
    tmp_path: Path,
) -> None:
    with server_process("--store", "sqlite", "--data-dir", str(tmp_path)) as proc:
        publish(proc, [("remembered", {"n": n}) for n in range(3)])
    with server_process("--store", "sqlite", "--data-dir", str(tmp_path)) as proc:
        assert ok_json(proc, "/api/channels")["channels"] == []  # nothing used yet
        (found,) = ok_json(proc, "/api/channels", {"q": "remembered"})["channels"]
        assert (found["name"], found["last_seq"]) == ("remembered", 3)
        assert ok_json(proc, "/api/channels", {"q": "remember"})["channels"] == []
