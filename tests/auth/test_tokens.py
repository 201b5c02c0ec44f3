"""JWT verification: keys and algorithms from the configuration, never from the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from athena_cdc.auth.tokens import (
    AuthConfigError,
    TokenRejected,
    TokenVerifier,
    bearer_token,
)

SECRET = "s" * 40


def claims(**extra: Any) -> dict[str, Any]:
    return {"exp": int(time.time()) + 3600, "channels": ["org_42"], **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def hmac_token(payload: dict[str, Any], key: bytes) -> str:
    """HS256 by hand, with any bytes as the key (PyJWT refuses a PEM as an HMAC key)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_valid_token_gives_its_channels_publish_patterns_admin_and_expiry() -> None:
    verifier = TokenVerifier(secret=SECRET)
    exp = int(time.time()) + 60
    grant = verifier.verify(
        hs256({"exp": exp, "sub": "u1", "channels": ["a*"], "publish": ["b"], "admin": True})
    )
    assert grant.read.covers("abc") and not grant.read.covers("b")
    assert grant.publish.covers("b") and not grant.publish.covers("abc")
    assert grant.admin and grant.subject == "u1"
    assert grant.expires_at_ms == exp * 1000


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        # Built when the test runs, not at collection: the times are relative to now.
        (lambda: None, "no token"),
        (lambda: "", "no token"),
        (lambda: "not.a.jwt", "malformed"),
        (lambda: hs256({"channels": ["x"]}), "no 'exp'"),
        (lambda: hs256(claims(exp=int(time.time()) - 120)), "expired"),
        (lambda: hs256(claims(nbf=int(time.time()) + 120)), "not yet valid"),
        (lambda: hs256(claims(), secret="t" * 40), "signature"),
        (lambda: hs256(claims(channels="org_42")), "channels"),
        (lambda: hs256(claims(admin="yes")), "admin"),
        (lambda: "x" * 9000, "longer than"),
    ],
)
def test_a_bad_token_is_rejected_with_a_reason(
    make_token: Callable[[], str | None], reason: str
) -> None:
    with pytest.raises(TokenRejected, match=reason):
        TokenVerifier(secret=SECRET).verify(make_token())


def test_alg_none_and_algorithms_other_than_configured_are_refused() -> None:
    verifier = TokenVerifier(secret=SECRET)
    unsigned = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(TokenRejected):
        verifier.verify(unsigned)
    hs512 = jwt.encode(claims(), SECRET * 2, algorithm="HS512")  # 80 bytes: no key warning
    with pytest.raises(TokenRejected, match="algorithm"):
        verifier.verify(hs512)


def test_an_rsa_public_key_token_cannot_be_forged_with_hs256_over_the_key(
    tmp_path: Path,
) -> None:
    """The classic confusion attack: HMAC keyed with the public key's PEM bytes."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "pub.pem"
    path.write_bytes(pem(private.public_key()))
    verifier = TokenVerifier(public_key_file=str(path))
    assert verifier.verify(jwt.encode(claims(), private, algorithm="RS256")).read.covers("org_42")
    forged = hmac_token(claims(), path.read_bytes())
    with pytest.raises(TokenRejected):
        verifier.verify(forged)


def test_an_es256_public_key_is_accepted(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "pub.pem"
    path.write_bytes(pem(private.public_key()))
    token = jwt.encode(claims(), private, algorithm="ES256")
    assert TokenVerifier(public_key_file=str(path)).verify(token).read.covers("org_42")


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="athena", issuer="https://idp")
    assert verifier.verify(hs256(claims(aud="athena", iss="https://idp")))
    with pytest.raises(TokenRejected, match="audience"):
        verifier.verify(hs256(claims(aud="other", iss="https://idp")))
    with pytest.raises(TokenRejected, match="issuer"):
        verifier.verify(hs256(claims(aud="athena", iss="https://evil")))


def test_leeway_forgives_an_issuer_clock_ahead_but_never_an_expired_token() -> None:
    verifier = TokenVerifier(secret=SECRET, leeway=10)
    assert verifier.verify(hs256(claims(nbf=int(time.time()) + 5)))
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(hs256(claims(exp=int(time.time()) - 2)))


def test_leeway_is_capped_at_30_seconds() -> None:
    with pytest.raises(AuthConfigError, match="leeway"):
        TokenVerifier(secret=SECRET, leeway=31)


def jwks(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    entries = []
    for kid, private in keys.items():
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        entry.update(kid=kid, alg="RS256", use="sig")
        entries.append(entry)
    path.write_text(json.dumps({"keys": entries}))


def test_jwks_keys_are_chosen_by_kid_and_reloaded(tmp_path: Path) -> None:
    one = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    two = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwks.json"
    jwks(path, {"one": one})
    verifier = TokenVerifier(jwks_file=str(path))
    token_two = jwt.encode(claims(), two, algorithm="RS256", headers={"kid": "two"})
    with pytest.raises(TokenRejected, match="unknown key id"):
        verifier.verify(token_two)
    jwks(path, {"one": one, "two": two})
    verifier.reload()
    assert verifier.verify(token_two)
    assert verifier.verify(jwt.encode(claims(), one, algorithm="RS256", headers={"kid": "one"}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"secret": "short"}, "at least 32 bytes"),
        ({"public_key_file": "/nonexistent.pem"}, "--jwt-public-key"),
        ({"jwks_file": "/nonexistent.json"}, "--jwks"),
    ],
)
def test_unusable_key_configuration_is_one_line_naming_the_option(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(AuthConfigError, match=message):
        TokenVerifier(**kwargs)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    verifier = TokenVerifier(secret=SECRET)
    token = hs256(claims(exp=int(time.time()) + 2))
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # no second signature check
    time.sleep(2.1)
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(token)
