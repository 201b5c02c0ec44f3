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
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from athena_cdc.auth.permissions import EVERYTHING, ChannelPatterns
from athena_cdc.auth.tokens import (
    OPEN_GRANT,
    AuthConfigError,
    Grant,
    TokenRejected,
    TokenVerifier,
    bearer_token,
)
from athena_cdc.logging_limits import RateLimitedLog

if TYPE_CHECKING:
    from athena_cdc.config import Settings

log = logging.getLogger(__name__)

KEY_HEADER = "X-Athena-Key"


@dataclass(frozen=True)
class Refused(Exception):
    """An HTTP request refused by the guard: answer ``status`` with ``body`` (JSON).

    ``reason`` is a short code for metrics and logs (see :class:`TokenRejected`).
    """

    status: int
    error: str
    message: str
    reason: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message}


def unauthorized(why: str, reason: str) -> Refused:
    return Refused(401, "unauthorized", why, reason)


def forbidden(why: str, reason: str) -> Refused:
    return Refused(403, "forbidden", why, reason)


class DenialLog:
    """Counts denials by reason and logs at most one line per reason per second."""

    def __init__(self, count: Callable[[str], None] = lambda reason: None) -> None:
        self._count = count
        self._log = RateLimitedLog(log)

    def __call__(self, reason: str, message: str) -> None:
        self._count(reason)
        self._log.info("denied (%s): %s", reason, message, kind=reason)


class Guard:
    def __init__(
        self,
        verifier: TokenVerifier | None = None,
        *,
        publish_key: str | None = None,
        allowed_origins: Sequence[str] = (),
        protect_ops: bool = False,
        ops_key: str | None = None,
        denials: DenialLog | None = None,
    ) -> None:
        self.denials = denials or DenialLog()
        self.verifier = verifier
        self.publish_key = publish_key
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.protect_ops = protect_ops
        self.ops_key = ops_key

    @classmethod
    def from_settings(cls, settings: Settings, denials: DenialLog | None = None) -> Guard:
        """The guard the settings describe; :class:`AuthConfigError` if a key is unusable."""
        verifier = None
        if settings.jwt_secret or settings.jwt_public_key or settings.jwks:
            verifier = TokenVerifier(
                secret=settings.jwt_secret,
                public_key_file=settings.jwt_public_key,
                jwks_file=settings.jwks,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway,
            )
        return cls(
            verifier,
            publish_key=settings.publish_key,
            allowed_origins=settings.allowed_origins,
            protect_ops=settings.protect_ops,
            ops_key=settings.ops_key,
            denials=denials,
        )

    def reload(self) -> None:
        """Re-read the JWKS (SIGHUP); a file that cannot be used keeps the keys in force."""
        if self.verifier is None:
            return
        try:
            self.verifier.reload()
        except AuthConfigError as exc:
            log.error("keeping the keys in force: %s", exc)

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
            raise self._denied(
                forbidden(f"The token does not allow reading the channel {channel!r}.", "channel")
            )
        return grant

    def refresh(self, token: str) -> Grant:
        """A new grant for a connected client; raises :class:`TokenRejected`."""
        if self.verifier is None:
            return OPEN_GRANT
        try:
            return self.verifier.verify(token)
        except TokenRejected as exc:
            self.denials(exc.reason, f"refresh: {exc}")
            raise

    def check_origin(self, origin: str | None) -> None:
        if not self.allowed_origins or origin is None:
            return  # non-browser clients send no Origin; browsers always do
        if origin.rstrip("/").lower() not in self.allowed_origins:
            raise self._denied(
                forbidden(f"Origin {origin[:200]!r} is not in --allowed-origins.", "origin")
            )

    # -- HTTP ------------------------------------------------------------------------
    def publisher(self, headers: Mapping[str, str], key: bytes = b"") -> ChannelPatterns:
        """The channels this request may publish to, or raise :class:`Refused` (401).

        Checked before the body is read. A trusted producer's ``X-Athena-Key``
        (``--publish-key``; ``key`` is the header's bytes as sent) may publish anywhere;
        otherwise, with auth on, the bearer token's ``publish`` patterns; with neither
        configured, anyone anywhere.
        """
        if self.publish_key_matches(key):
            return EVERYTHING
        if self.verifier is None:
            if self.publish_key is None:
                return EVERYTHING
            raise self._denied(
                unauthorized(
                    f"Missing or wrong {KEY_HEADER} header; send the server's publish key.",
                    "publish_key",
                )
            )
        token = bearer_token(headers.get("Authorization"))
        if token is None and key:
            raise self._denied(unauthorized(f"Wrong {KEY_HEADER} header.", "publish_key"))
        return self._verify(token).publish

    def publish_key_matches(self, key: bytes) -> bool:
        """Whether ``key`` (a header's bytes as sent) is the configured publish key."""
        return self.publish_key is not None and hmac.compare_digest(
            key, self.publish_key.encode()
        )

    def connection_publisher(self, grant: Grant, key_matches: bool) -> ChannelPatterns:
        """The channels a WebSocket connection may publish to (its ``publish`` messages),
        or raise :class:`Refused` (401): the rules of :meth:`publisher`, with the key
        sent on the upgrade request and the connection's token in force (``grant``)."""
        if key_matches:
            return EVERYTHING
        if self.verifier is None:
            if self.publish_key is None:
                return EVERYTHING
            raise self._denied(
                unauthorized(
                    f"Missing or wrong {KEY_HEADER} header on the WebSocket upgrade; "
                    "send the server's publish key.",
                    "publish_key",
                )
            )
        return grant.publish

    def check_publish(self, allowed: ChannelPatterns, channels: Iterable[str]) -> None:
        """All or nothing: every channel of a batch must be allowed (403 otherwise)."""
        for channel in channels:
            if not allowed.covers(channel):
                raise self._denied(
                    forbidden(f"The token does not allow publishing to {channel!r}.", "channel")
                )

    def forbidden_channel(self, channel: str) -> None:
        """Record an in-band denial (subscribe or travel of a channel not covered)."""
        self.denials("channel", f"read of {channel[:100]!r} not covered by the token")

    def ops(self, headers: Mapping[str, str]) -> None:
        """Allow ``/metrics`` (and the console): open unless ``--protect-ops``."""
        if not self.protect_ops:
            return
        token = bearer_token(headers.get("Authorization"))
        if token is not None and self.ops_key is not None and _same(token, self.ops_key):
            return
        if self.verifier is None:
            raise self._denied(unauthorized("Send Authorization: Bearer <ops key>.", "ops_key"))
        grant = self._verify(token)
        if not grant.admin:
            raise self._denied(forbidden('The token has no "admin": true claim.', "not_admin"))

    def _verify(self, token: str | None) -> Grant:
        assert self.verifier is not None
        try:
            return self.verifier.verify(token)
        except TokenRejected as exc:
            raise self._denied(unauthorized(f"Invalid token: {exc}.", exc.reason)) from None

    def _denied(self, refused: Refused) -> Refused:
        self.denials(refused.reason, refused.message)
        return refused


def _same(given: str | None, expected: str) -> bool:
    """Constant-time comparison that any header value (even non-ASCII) can go through."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
