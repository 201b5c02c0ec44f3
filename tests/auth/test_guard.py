"""The guard's decisions: upgrade, publish, ops, origins; auth off lets everything through."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from athena_cdc.auth.guard import DenialLog, Guard, Refused
from athena_cdc.auth.tokens import OPEN_GRANT, TokenVerifier

SECRET = "k" * 40


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def guard(**kwargs: Any) -> Guard:
    return Guard(TokenVerifier(secret=SECRET), **kwargs)


@contextlib.contextmanager
def refused(status: int, error: str) -> Iterator[None]:
    with pytest.raises(Refused) as caught:
        yield
    assert (caught.value.status, caught.value.error) == (status, error), caught.value


def test_with_auth_off_everything_is_allowed_and_nothing_expires() -> None:
    open_guard = Guard()
    assert open_guard.upgrade({}, None, "any") is OPEN_GRANT
    open_guard.check_publish(open_guard.publisher({}), ["any"])
    open_guard.ops({})
    assert not open_guard.enabled


def test_upgrade_needs_a_valid_token_covering_the_clients_own_channel() -> None:
    g = guard()
    with refused(401, "unauthorized"):
        g.upgrade({}, None, "org_42")
    with refused(401, "unauthorized"):
        g.upgrade(bearer("garbage"), None, "org_42")
    with refused(403, "forbidden"):
        g.upgrade(bearer(token(channels=["org_43"])), None, "org_42")
    assert g.upgrade(bearer(token(channels=["org_*"])), None, "org_42").read.covers("org_42")
    assert g.upgrade({}, token(channels=["org_42"]), "org_42")  # ?token= for browsers


def test_a_publish_is_all_or_nothing_over_the_batchs_channels() -> None:
    g = guard()
    allowed = g.publisher(bearer(token(publish=["org_4*"])))
    g.check_publish(allowed, ["org_42", "org_43"])
    with refused(403, "forbidden"):
        g.check_publish(allowed, ["org_42", "other"])
    with refused(401, "unauthorized"):
        g.publisher({})
    with refused(403, "forbidden"):  # read is not publish
        g.check_publish(g.publisher(bearer(token(channels=["*"]))), ["org_42"])


def test_the_publish_key_still_admits_trusted_producers() -> None:
    g = guard(publish_key="trusted")
    g.check_publish(g.publisher({}, b"trusted"), ["anything"])
    with refused(401, "unauthorized"):
        g.publisher({}, b"wrong")
    keyed = Guard(publish_key="trusted")  # auth off, key on: the key is required
    keyed.check_publish(keyed.publisher({}, b"trusted"), ["x"])
    with refused(401, "unauthorized"):
        keyed.publisher({}, b"\xff\xfe")


def test_ops_pages_need_an_admin_token_or_the_ops_key_when_protected() -> None:
    g = guard(protect_ops=True, ops_key="o" * 20)
    g.ops(bearer("o" * 20))
    g.ops(bearer(token(admin=True)))
    with refused(403, "forbidden"):
        g.ops(bearer(token(channels=["*"])))
    with refused(401, "unauthorized"):
        g.ops({})
    guard().ops({})  # not protected: open


def test_origins_outside_the_allowed_list_are_refused() -> None:
    g = Guard(allowed_origins=["https://app.example.com"])
    g.upgrade({"Origin": "https://app.example.com"}, None, "x")
    g.upgrade({}, None, "x")  # not a browser
    with refused(403, "forbidden"):
        g.upgrade({"Origin": "https://evil.example.com"}, None, "x")


def test_denials_are_counted_each_time_but_logged_once_per_reason_per_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    g = Guard(TokenVerifier(secret=SECRET), denials=DenialLog(counted.append))
    with caplog.at_level("INFO", logger="athena_cdc.auth.guard"):
        for _ in range(1000):
            with pytest.raises(Refused):
                g.upgrade({}, None, "x")
            with pytest.raises(Refused):
                g.upgrade(bearer(token(channels=["y"])), None, "x")
    assert counted.count("missing") == 1000 and counted.count("channel") == 1000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one per reason within the second
