"""Who is connecting: the client name from the upgrade request, or why not.

The name comes from the ``X-Athena-Client`` header, trimmed; browsers cannot set
headers on a WebSocket, so ``?client=<name>`` is accepted when the header is absent
(or empty after trimming). The name is also the channel the connection subscribes to.
"""

from __future__ import annotations

from dataclasses import dataclass

from athena_cdc.protocol.messages import channel_problem

CLIENT_HEADER = "X-Athena-Client"
MISSING_HEADER_ERROR = "Missing X-Athena-Client header"
INVALID_HEADER_ERROR = "Invalid X-Athena-Client header"


@dataclass(frozen=True)
class HandshakeRejected(Exception):
    """The upgrade is refused with HTTP 400 and this JSON body."""

    error: str
    message: str
    hint: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message, "hint": self.hint}


def client_name(header: str | None, query: str | None) -> str:
    """The client name, or raise :class:`HandshakeRejected`."""
    for raw in (header, query):
        name = (raw or "").strip()
        if not name:
            continue
        problem = channel_problem(name)
        if problem:
            raise HandshakeRejected(
                INVALID_HEADER_ERROR,
                f"The client name {problem}.",
                "Send a name of 1 to 256 printable characters, e.g. "
                f"'{CLIENT_HEADER}: athena_logging'.",
            )
        return name
    raise HandshakeRejected(
        MISSING_HEADER_ERROR,
        "A WebSocket connection needs a client name; it also names the channel you "
        "are subscribed to.",
        f"Add the header '{CLIENT_HEADER}: <client name>' to the upgrade request "
        "(browsers: append ?client=<client name> to the URL). Use ws:// against a server "
        "without TLS; wss:// only when the server or a proxy in front of it serves TLS.",
    )
