"""JWT verification (PyJWT): a token in, a :class:`Grant` out, or :class:`TokenRejected`.

The accepted algorithms come from the configuration, never from the token: HS256 for
``--jwt-secret``, RS256 or ES256 for ``--jwt-public-key`` (by the key's type), and for
``--jwks`` each key's own ``alg`` (or the one its type implies). ``none`` is never
accepted; ``exp`` is required; ``nbf``/``iat`` are checked when present; ``aud`` and
``iss`` when configured. A JWKS file is re-read by :meth:`TokenVerifier.reload`
(the server calls it on SIGHUP), so keys rotate without a restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from athena_cdc.auth.permissions import NOTHING, ChannelPatterns, InvalidPatterns

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8 * 1024
MAX_EXP_S = 253_402_300_799  # 9999-12-31T23:59:59Z: keeps exp * 1000 a 64-bit integer
VERIFIED_CACHE_SIZE = 4096  # tokens remembered as verified (a few MiB at most)
MAX_LEEWAY_S = 30.0
_ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
)


class AuthConfigError(Exception):
    """A key or option that cannot be used; the message is one line naming it."""


class TokenRejected(Exception):
    """A token that grants nothing: missing, malformed, badly signed, expired...

    ``reason`` is one of a fixed set of short codes (a metric label; never a value
    taken from the token), the message says it in words.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows, until ``expires_at_ms``."""

    subject: str | None
    read: ChannelPatterns
    publish: ChannelPatterns
    admin: bool
    expires_at_ms: int


# With auth off everybody may do everything, and nothing expires.
OPEN_GRANT = Grant(None, ChannelPatterns(["*"]), ChannelPatterns(["*"]), True, 0)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <jwt>`` header value, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenVerifier:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_file: str | None = None,
        jwks_file: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        if sum(x is not None for x in (secret, public_key_file, jwks_file)) != 1:
            raise AuthConfigError("give exactly one of --jwt-secret, --jwt-public-key, --jwks")
        if not 0 <= leeway <= MAX_LEEWAY_S:
            raise AuthConfigError(f"--jwt-leeway must be between 0 and {MAX_LEEWAY_S:g}s")
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self._jwks_file = jwks_file
        self._single: tuple[Any, list[str]] | None = None  # (key, algorithms)
        self._by_kid: dict[str, tuple[Any, list[str]]] = {}
        self._verified: OrderedDict[str, Grant] = OrderedDict()
        if secret is not None:
            if len(secret.encode()) < 32:
                raise AuthConfigError(
                    "--jwt-secret must be at least 32 bytes (HS256 needs a key as long as "
                    "its hash); generate one with: openssl rand -base64 48"
                )
            self._single = (secret.encode(), ["HS256"])
        elif public_key_file is not None:
            self._single = _load_public_key(public_key_file)
        else:
            self.reload()

    def reload(self) -> None:
        """Re-read the JWKS file (no-op for a secret or a single public key).

        A file that cannot be read keeps the keys in force and logs why, so a bad
        rotation cannot lock every client out.
        """
        if self._jwks_file is None:
            return
        by_kid = _load_jwks(self._jwks_file)
        self._by_kid = by_kid
        self._verified.clear()  # a key may have been withdrawn
        log.info("JWKS %s: %d keys (%s)", self._jwks_file, len(by_kid), ", ".join(by_kid))

    def verify(self, token: str | None) -> Grant:
        """The grant of ``token``, or :class:`TokenRejected`.

        A producer sends the same token with every ``POST /events``: tokens already
        verified are remembered (the most recent :data:`VERIFIED_CACHE_SIZE`, each until
        it expires), so a publish costs a dict lookup instead of a signature check.
        """
        if token:
            cached = self._verified.get(token)
            if cached is not None:
                if cached.expires_at_ms > time.time() * 1000:
                    self._verified.move_to_end(token)
                    return cached
                del self._verified[token]
        grant = self._verify(token)
        assert token is not None  # _verify refuses a missing one
        self._verified[token] = grant
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return grant

    def _verify(self, token: str | None) -> Grant:
        if not token:
            raise TokenRejected(
                "missing",
                "no token: send it in the Authorization header (Bearer scheme), or as the "
                "token query parameter from a browser",
            )
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("too_long", f"token longer than {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():  # a JWT is base64url and dots; PyJWT fails on other text
            raise TokenRejected("malformed", "malformed token: not ASCII")
        key, algorithms = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected(
                "not_yet_valid", "token not yet valid (nbf/iat in the future)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("missing_claim", f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("audience", "token audience (aud) is not this server's") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("issuer", "token issuer (iss) is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(
                "algorithm", f"token algorithm not accepted (allowed: {algorithms})"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("signature", "token signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            # Anything else PyJWT trips on is still a token we cannot use, never a 500.
            raise TokenRejected("malformed", f"malformed token: {exc}") from None
        grant = _grant(claims)
        # The leeway forgives an issuer whose clock runs ahead (nbf, iat); expiry is
        # exact, so that a connection is closed when its token expires and a token
        # accepted now is not closed at once.
        if grant.expires_at_ms <= time.time() * 1000:
            raise TokenRejected("expired", "token expired")
        return grant

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        if self._single is not None:
            return self._single
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise TokenRejected("malformed", f"malformed token: {exc}") from None
        if not isinstance(kid, str):
            if len(self._by_kid) == 1:
                return next(iter(self._by_kid.values()))
            raise TokenRejected(
                "unknown_kid", "token header has no kid, and the JWKS has several keys"
            )
        found = self._by_kid.get(kid)
        if found is None:
            raise TokenRejected("unknown_kid", f"unknown key id (kid) {kid[:64]!r}")
        return found


def _grant(claims: Mapping[str, Any]) -> Grant:
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenRejected("claims", 'claim "exp" must be a number')
    if not 0 < exp <= MAX_EXP_S:
        raise TokenRejected("claims", 'claim "exp" is not a time before the year 10000')
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise TokenRejected("claims", 'claim "admin" must be true or false')
    subject = claims.get("sub")
    try:
        read = ChannelPatterns.from_claim(claims.get("channels"), "channels")
        publish = ChannelPatterns.from_claim(claims.get("publish"), "publish")
    except InvalidPatterns as exc:
        raise TokenRejected("claims", str(exc)) from None
    return Grant(
        subject if isinstance(subject, str) else None,
        read or NOTHING,
        publish or NOTHING,
        admin,
        int(exp * 1000),
    )


def _load_public_key(path: str) -> tuple[Any, list[str]]:
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise AuthConfigError(f"--jwt-public-key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise AuthConfigError(
            f"--jwt-public-key {path}: not a PEM public key (expected -----BEGIN PUBLIC KEY-----)"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise AuthConfigError(f"--jwt-public-key {path}: RSA keys need 2048 bits or more")
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise AuthConfigError(f"--jwt-public-key {path}: use an RSA (RS256) or P-256 (ES256) key")


def _load_jwks(path: str) -> dict[str, tuple[Any, list[str]]]:
    try:
        data = json.loads(Path(path).read_bytes())
        key_set = jwt.PyJWKSet.from_dict(data)
    except OSError as exc:
        raise AuthConfigError(f"--jwks {path}: {exc.strerror or exc}") from None
    except (ValueError, jwt.PyJWTError) as exc:
        raise AuthConfigError(f"--jwks {path}: not a usable JWKS document: {exc}") from None
    by_kid: dict[str, tuple[Any, list[str]]] = {}
    for index, jwk in enumerate(key_set.keys):
        algorithm = jwk.algorithm_name
        if algorithm not in _ASYMMETRIC:
            raise AuthConfigError(
                f"--jwks {path}: key {jwk.key_id or index} uses {algorithm}; "
                "only asymmetric keys (RS*, ES*, PS*) are accepted in a JWKS"
            )
        by_kid[jwk.key_id or str(index)] = (jwk.key, [algorithm])
    if not by_kid:
        raise AuthConfigError(f"--jwks {path}: the key set is empty")
    return by_kid
