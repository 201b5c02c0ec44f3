"""Every way a token can be refused, over real sockets: its exact answer and its counter."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from athena_cdc.server.app import AthenaServer
from tests.protocol._support import event, get, post_events, upgrade_answer
from tests.support.servers import running_server

SECRET = "denials-test-secret-of-at-least-32-bytes"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "exp": int(time.time()) + 3600,
        "aud": "athena",
        "iss": "https://idp.test",
        "channels": ["org_42"],
        "publish": ["org_42"],
        **extra,
    }


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey = KEY, kid: str = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def unsigned(payload: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"none","typ":"JWT","kid":"k1"}')
    return f"{header}.{b64(json.dumps(payload).encode())}."


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AthenaServer]:
    entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    entry.update(kid="k1", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [entry]}))
    async with running_server(
        store="memory", jwks=str(jwks), jwt_audience="athena", jwt_issuer="https://idp.test"
    ) as srv:
        yield srv


TOKENS: dict[str, tuple[Callable[[], str | None], str]] = {
    "no token": (lambda: None, "missing"),
    "bad signature": (lambda: rs256(claims(), OTHER_KEY), "signature"),
    "wrong alg (HS256 with the JWKS)": (
        lambda: jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "k1"}),
        "algorithm",
    ),
    "alg none": (lambda: unsigned(claims()), "algorithm"),
    "expired": (lambda: rs256(claims(exp=int(time.time()) - 60)), "expired"),
    "not yet valid": (lambda: rs256(claims(nbf=int(time.time()) + 600)), "not_yet_valid"),
    "wrong audience": (lambda: rs256(claims(aud="someone-else")), "audience"),
    "wrong issuer": (lambda: rs256(claims(iss="https://evil.test")), "issuer"),
    "unknown kid": (lambda: rs256(claims(), kid="k9"), "unknown_kid"),
    "garbage": (lambda: "a.b.c", "malformed"),
}


async def upgrade(srv: AthenaServer, token: str | None, channel: str = "org_42") -> tuple[int, Any]:
    headers = {"X-Athena-Client": channel}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await upgrade_answer(srv, headers)


async def denied(srv: AthenaServer, reason: str) -> float:
    _, _, text = await get(srv, "/metrics")
    for line in text.splitlines():
        if line.startswith(f'athena_cdc_auth_denied_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("case", list(TOKENS))
async def test_each_bad_token_is_401_on_upgrade_and_publish_and_counted_by_reason(
    server: AthenaServer, case: str
) -> None:
    make, reason = TOKENS[case]
    token = make()
    status, body = await upgrade(server, token)
    assert (status, body["error"]) == (401, "unauthorized"), body
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    status, body = await post_events(server, [event("org_42", 1)], headers=headers)
    assert (status, body["error"]) == (401, "unauthorized"), body
    assert await denied(server, reason) == 2


async def test_a_good_token_outside_its_channels_is_403_on_upgrade_and_on_a_mixed_batch(
    server: AthenaServer,
) -> None:
    status, body = await upgrade(server, rs256(claims()), channel="org_43")
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await post_events(
        server,
        [event("org_42", 1), event("org_43", 2)],
        headers={"Authorization": f"Bearer {rs256(claims())}"},
    )
    assert (status, body["error"]) == (403, "forbidden")
    assert await denied(server, "channel") == 2
    status, _ = await upgrade(server, rs256(claims()))
    assert status == 101
