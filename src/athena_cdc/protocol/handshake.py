"""Who is connecting: the client name from the upgrade request, or why not.

The name comes from the ``X-Athena-Client`` header, trimmed; browsers cannot set
headers on a WebSocket, so ``?client=<name>`` is accepted when the header is absent
(or empty after trimming). The name is also the channel the connection subscribes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from athena_cdc.protocol.messages import channel_problem

CLIENT_HEADER = "X-Athena-Client"
MISSING_HEADER_ERROR = "Missing X-Athena-Client header"
INVALID_HEADER_ERROR = "Invalid X-Athena-Client header"
CLIENT_QUERY_PARAMETER = "client"
WEBSOCKET_VERSION = "13"  # RFC 6455; the only version this server speaks


@dataclass(frozen=True)
class HandshakeRejected(Exception):
    """The upgrade is refused with HTTP 400 and this JSON body."""

    error: str
    message: str
    hint: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message, "hint": self.hint}


def client_name(header: str | None, raw_query: str = "") -> str:
    """The client name, or raise :class:`HandshakeRejected`.

    ``raw_query`` is the query string as sent (still percent-encoded); its ``client``
    parameter is read only when the header is absent or empty.
    """
    name = (header or "").strip()
    if not name:
        name = (query_client_name(raw_query) or "").strip()
    if name:
        problem = channel_problem(name)
        if problem:
            raise _invalid_name(problem)
        return name
    raise HandshakeRejected(
        MISSING_HEADER_ERROR,
        "A WebSocket connection needs a client name; it also names the channel you "
        "are subscribed to.",
        f"Add the header '{CLIENT_HEADER}: <client name>' to the upgrade request "
        "(browsers: append ?client=<client name> to the URL). Use ws:// against a server "
        "without TLS; wss:// only when the server or a proxy in front of it serves TLS.",
    )


def query_client_name(raw_query: str) -> str | None:
    """The first ``client`` parameter of a raw query string, decoded strictly.

    aiohttp's ``request.query`` turns bytes that are not UTF-8 into U+FFFD, so
    ``?client=a%ffb`` would become ``a\ufffdb``; the header path refuses such a name, and
    so does this one. ``+`` is a space, as in ``request.query``.
    """
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        if _unquote(key) != CLIENT_QUERY_PARAMETER:
            continue
        decoded = _unquote(value)
        if decoded is None:
            raise _invalid_name("must be valid UTF-8 (after percent-decoding)")
        return decoded
    return None


def _unquote(text: str) -> str | None:
    """Percent- and plus-decoded UTF-8, or None when the bytes are not UTF-8."""
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode()
    except UnicodeError:  # bytes that are not UTF-8, or a lone surrogate in the str
        return None


def _invalid_name(problem: str) -> HandshakeRejected:
    return HandshakeRejected(
        INVALID_HEADER_ERROR,
        f"The client name {problem}.",
        f"Send a name of 1 to 256 printable characters, e.g. '{CLIENT_HEADER}: "
        f"athena_logging' (browsers: ?{CLIENT_QUERY_PARAMETER}=athena_logging).",
    )


def unsupported_websocket_version(headers: Mapping[str, str]) -> str | None:
    """The ``Sec-WebSocket-Version`` of a WebSocket upgrade that is not 13, else None.

    RFC 6455 §4.2.2: the server answers such an upgrade with 426 and the version it
    speaks. A request that is no WebSocket upgrade at all is another answer's business.
    """
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return None
    version = headers.get("Sec-WebSocket-Version", "").strip()
    return None if version == WEBSOCKET_VERSION else version


# The headers of the opening handshake (RFC 6455 §4.1) that aiohttp reads: all ASCII
# tokens or base64. aiohttp keeps other bytes as lone surrogates, then fails on them
# with a 500 (decoding the key, or echoing a value into its plain-text 400).
HANDSHAKE_HEADERS = (
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
)


def handshake_header_problem(headers: Mapping[str, str]) -> str | None:
    """Which handshake header has a value that is not printable ASCII, if any."""
    for name in HANDSHAKE_HEADERS:
        value = headers.get(name)
        if value is not None and not (value.isascii() and value.isprintable()):
            return f"The {name} header must be printable ASCII."
    return None
