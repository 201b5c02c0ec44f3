"""Publishing events over HTTP (``POST /events``) with the standard library only.

Synchronous (``urllib``); from asyncio code call it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from athena_cdc.client.errors import ClientError

Json = Any


@dataclass(frozen=True, slots=True)
class Published:
    """An event the server appended and made durable."""

    channel: str
    seq: int
    ts_ms: int


class PublishError(ClientError):
    """The server refused the events (``status``, its ``error`` code and ``message``;
    ``index`` of the bad event of a batch), or could not be reached (``status`` None).
    Nothing of the request was appended."""

    def __init__(self, status: int | None, error: str, message: str, index: int | None = None):
        where = f" (event {index})" if index is not None else ""
        head = f"HTTP {status} {error}" if status is not None else error
        super().__init__(f"{head}: {message}{where}")
        self.status = status
        self.error = error
        self.message = message
        self.index = index


def events_url(url: str) -> str:
    """``http(s)://host:port/events`` for a server URL given as ws://, wss://, http(s)://
    (any path: ``ws://host:4053/ws`` works)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected ws://HOST:PORT/ws)")
    return urlunsplit((scheme, parts.netloc, "/events", "", ""))


def publish(
    url: str,
    events: Iterable[tuple[str, Json]],
    *,
    token: str | None = None,
    key: str | None = None,
    timeout: float = 30.0,
    ssl: SSLContext | None = None,
) -> list[Published]:
    """Append ``(channel, payload)`` pairs atomically; their seqs, in order.

    ``token``: a JWT for ``Authorization: Bearer``; ``key``: the ``--publish-key``;
    ``ssl``: the TLS context for an https server with a private CA.
    """
    body = json.dumps(
        [{"organization_id": channel, "payload": payload} for channel, payload in events],
        allow_nan=False,  # the server refuses NaN and Infinity: say so before sending
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return post_events(url, body, token=token, key=key, timeout=timeout, ssl=ssl)


def post_events(
    url: str,
    body: bytes,
    *,
    token: str | None = None,
    key: str | None = None,
    timeout: float = 30.0,
    ssl: SSLContext | None = None,
) -> list[Published]:
    """POST a ready JSON body (one event or an array of them) to ``/events``."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["X-Athena-Key"] = key
    request = urllib.request.Request(events_url(url), data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ssl) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            raise _refusal(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PublishError(None, "unreachable", f"cannot reach {url}: {reason}") from None
    except ValueError as exc:
        raise PublishError(None, "bad_answer", f"the server's answer is not JSON: {exc}") from None
    return [
        Published(e["organization_id"], e["seq"], e["ts_ms"]) for e in answer.get("events", [])
    ]


def _refusal(status: int, raw: bytes) -> PublishError:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return PublishError(status, "http_error", text.strip()[:200] or "no details")
    index = body.get("index")
    return PublishError(
        status,
        str(body.get("error", "http_error")),
        str(body.get("message", "")),
        index if isinstance(index, int) else None,
    )
