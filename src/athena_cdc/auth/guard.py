"""The one place that decides who may connect, read, publish and see the ops pages.

Endpoints ask the :class:`Guard`; it answers with a :class:`Grant` or raises
:class:`Refused`, which carries the HTTP status and JSON body of the contract
(401 ``unauthorized``, 403 ``forbidden``). With no JWT key configured auth is off:
every check passes with :data:`OPEN_GRANT`, so the seed's clients keep working.
Checks run when a client connects, subscribes, travels, publishes or refreshes its
token — never per delivered event.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from athena_cdc.auth.tokens import OPEN_GRANT, Grant, TokenRejected, TokenVerifier, bearer_token

KEY_HEADER = "X-Athena-Key"


@dataclass(frozen=True)
class Refused(Exception):
    """An HTTP request refused by the guard: answer ``status`` with ``body`` (JSON)."""

    status: int
    error: str
    message: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message}


def unauthorized(why: str) -> Refused:
    return Refused(401, "unauthorized", why)


def forbidden(why: str) -> Refused:
    return Refused(403, "forbidden", why)


class Guard:
    def __init__(
        self,
        verifier: TokenVerifier | None = None,
        *,
        publish_key: str | None = None,
        allowed_origins: Sequence[str] = (),
        protect_ops: bool = False,
        ops_key: str | None = None,
    ) -> None:
        self.verifier = verifier
        self.publish_key = publish_key
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.protect_ops = protect_ops
        self.ops_key = ops_key

    @property
    def enabled(self) -> bool:
        """Whether tokens are required to read (a JWT key is configured)."""
        return self.verifier is not None

    # -- WebSocket -------------------------------------------------------------------
    def upgrade(self, headers: Mapping[str, str], query_token: str | None, channel: str) -> Grant:
        """The grant of a connecting client whose own channel is ``channel``."""
        self.check_origin(headers.get("Origin"))
        if self.verifier is None:
            return OPEN_GRANT
        token = bearer_token(headers.get("Authorization")) or query_token
        grant = self._verify(token)
        if not grant.read.covers(channel):
            raise forbidden(f"The token does not allow reading the channel {channel!r}.")
        return grant

    def refresh(self, token: str) -> Grant:
        """A new grant for a connected client; raises :class:`TokenRejected`."""
        if self.verifier is None:
            return OPEN_GRANT
        return self.verifier.verify(token)

    def check_origin(self, origin: str | None) -> None:
        if not self.allowed_origins or origin is None:
            return  # non-browser clients send no Origin; browsers always do
        if origin.rstrip("/").lower() not in self.allowed_origins:
            raise forbidden(f"Origin {origin[:200]!r} is not in --allowed-origins.")

    # -- HTTP ------------------------------------------------------------------------
    def publish(self, headers: Mapping[str, str], channels: Iterable[str]) -> None:
        """Allow a publish to every one of ``channels``, or raise :class:`Refused`.

        A trusted producer's ``X-Athena-Key`` (``--publish-key``) allows any channel;
        otherwise, with auth on, the bearer token's ``publish`` patterns must cover
        every channel of the batch (all or nothing).
        """
        if self.publish_key is not None and _same(headers.get(KEY_HEADER), self.publish_key):
            return
        if self.verifier is None:
            if self.publish_key is None:
                return
            raise unauthorized(
                f"Missing or wrong {KEY_HEADER} header; send the server's publish key."
            )
        token = bearer_token(headers.get("Authorization"))
        if token is None and self.publish_key is not None and headers.get(KEY_HEADER):
            raise unauthorized(f"Wrong {KEY_HEADER} header.")
        grant = self._verify(token)
        for channel in channels:
            if not grant.publish.covers(channel):
                raise forbidden(f"The token does not allow publishing to {channel!r}.")

    def ops(self, headers: Mapping[str, str]) -> None:
        """Allow ``/metrics`` (and the console): open unless ``--protect-ops``."""
        if not self.protect_ops:
            return
        token = bearer_token(headers.get("Authorization"))
        if token is not None and self.ops_key is not None and _same(token, self.ops_key):
            return
        if self.verifier is None:
            raise unauthorized("Send Authorization: Bearer <ops key>.")
        grant = self._verify(token)
        if not grant.admin:
            raise forbidden('The token has no "admin": true claim.')

    def _verify(self, token: str | None) -> Grant:
        assert self.verifier is not None
        try:
            return self.verifier.verify(token)
        except TokenRejected as exc:
            raise unauthorized(f"Invalid token: {exc}.") from None


def _same(given: str | None, expected: str) -> bool:
    """Constant-time comparison that any header value (even non-ASCII) can go through."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
