"""The client's exceptions: what ends a client for good (a reconnect would not help)."""

from __future__ import annotations


class ClientError(Exception):
    """Base class of the client's errors."""


class Refused(ClientError):
    """The server refused the connection in a way that retrying cannot fix: a bad client
    name (400), a token that does not cover the client's channel or an Origin not
    allowed (403), no valid token and no way to get one (401), a wrong path (404)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        head = f"HTTP {status} {error}".rstrip()
        super().__init__(f"{head}: {message}" if message else head)
        self.status = status
        self.error = error
        self.message = message


class TokenUnavailable(ClientError):
    """The token callback failed, or gave tokens the server refused, too many times."""
