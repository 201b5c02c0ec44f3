"""Auth in benchmarks: the server verifies a token on connect and publish, as in production.

:func:`enable` (the harness, which starts the server) picks a secret, returns the server's
flags for it, and puts a token that reads and publishes everything in the environment,
where the load generator's workers (subprocesses) and the publisher find it with
:func:`headers`; :func:`use` puts a given token there (``athena-cdc bench --token``).
"""

from __future__ import annotations

import os
import secrets
import time

import jwt

TOKEN_ENV = "ATHENA_CDC_BENCH_TOKEN"


def enable() -> list[str]:
    secret = secrets.token_urlsafe(48)
    claims = {"exp": int(time.time()) + 86_400, "channels": ["*"], "publish": ["*"]}
    os.environ[TOKEN_ENV] = jwt.encode(claims, secret, algorithm="HS256")
    return [f"--jwt-secret={secret}"]


def use(token: str) -> None:
    """Send ``token`` from here on, from this process and the workers it starts later."""
    os.environ[TOKEN_ENV] = token


def headers() -> dict[str, str]:
    """``Authorization`` for the bench's requests when auth is on, else nothing."""
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}
