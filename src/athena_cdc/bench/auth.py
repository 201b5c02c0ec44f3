"""Auth in benchmarks: the server verifies a token on connect and publish, as in production.

:func:`use` puts the token in the environment (``athena-cdc bench --token``; the harness
makes one for the server it starts), where the load generator's workers (subprocesses)
and the publisher find it with :func:`headers`.
"""

from __future__ import annotations

import os

TOKEN_ENV = "ATHENA_CDC_BENCH_TOKEN"


def use(token: str) -> None:
    """Send ``token`` from here on, from this process and the workers it starts later."""
    os.environ[TOKEN_ENV] = token


def headers() -> dict[str, str]:
    """``Authorization`` for the bench's requests when auth is on, else nothing."""
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}
