"""Plain HTTP for the console tests: GET the ops API, POST events (real sockets)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from tests.support.servers import ServerProcess

Json = Any


def get_json(
    server: ServerProcess,
    path: str,
    params: Mapping[str, object] | None = None,
    *,
    token: str | None = None,
) -> tuple[int, Json]:
    """GET ``path`` (with query ``params``): the status and the JSON body."""
    url = server.base + path
    if params:
        url += "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers.get_content_type() == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers.get_content_type() == "application/json", error.read()
        return error.code, json.loads(error.read())


def ok_json(
    server: ServerProcess,
    path: str,
    params: Mapping[str, object] | None = None,
    *,
    token: str | None = None,
) -> Json:
    status, body = get_json(server, path, params, token=token)
    assert status == 200, body
    return body


def publish(server: ServerProcess, events: list[tuple[str, Json]]) -> list[Json]:
    """POST /events with (channel, payload) pairs; their seqs and times."""
    body = json.dumps([{"organization_id": c, "payload": p} for c, p in events]).encode()
    request = urllib.request.Request(
        server.base + "/events", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        answer: list[Json] = json.loads(response.read())["events"]
        return answer
