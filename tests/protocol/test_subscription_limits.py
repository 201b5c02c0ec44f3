"""Per-connection limits: at most --max-subscriptions channels, a message rate on by
default; beyond either, a clear error and the connection stays open."""

from __future__ import annotations

from typing import Any

import pytest

from athena_cdc.cli import build_parser
from athena_cdc.config import ConfigError, Settings, load_settings
from athena_cdc.server.rate_limit import BURST_SECONDS
from tests.protocol._support import client, event, publish
from tests.protocol.test_bad_input import assert_error, still_works
from tests.support.servers import running_server


def settings_from(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return load_settings(build_parser().parse_args(["serve", *argv]), env or {})


def test_defaults_are_on() -> None:
    settings = settings_from([])
    assert settings.max_subscriptions == 1_000
    assert settings.client_rate_limit == 100.0


@pytest.mark.parametrize("off", ["none", "0", "off", "0.0"])
def test_the_rate_limit_can_be_turned_off(off: str) -> None:
    assert settings_from(["--client-rate-limit", off]).client_rate_limit is None
    env = {"ATHENA_CDC_CLIENT_RATE_LIMIT": off}
    assert settings_from([], env).client_rate_limit is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--client-rate-limit", "-5"],
        ["--client-rate-limit", "fast"],
        ["--max-subscriptions", "0"],
        ["--max-subscriptions", "many"],
    ],
)
def test_invalid_limits_name_the_option(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        settings_from(argv)


async def test_subscriptions_beyond_the_limit_are_refused_and_the_connection_stays() -> None:
    async with running_server(store="memory", max_subscriptions=3) as srv, client(srv, "a") as c:
        # The client-name channel counts: two more fit.
        for channel in ("b", "c"):
            reply = await c.request({"type": "subscribe", "organization_id": channel})
            assert reply["status"] == "subscribed"
        for refused in (
            {"type": "subscribe", "organization_id": "d"},
            {"subscribe_to_organization_id": "d"},  # the legacy form too
        ):
            reply = await c.request(refused)
            assert_error(reply, "limit_exceeded")
            assert "3 subscriptions" in reply["message"], reply
            assert "'d'" in reply["message"], reply
        # Nothing of the refused channel arrives; subscribed ones still do.
        await publish(srv, [event("d", "not for a"), event("b", "for a")])
        [got] = await c.recv_events(1)
        assert got["organization_id"] == "b"
        # Subscribing again to a channel it has is no new subscription.
        reply = await c.request({"type": "subscribe", "organization_id": "c"})
        assert reply["status"] == "subscribed"
        # Unsubscribing makes room.
        reply = await c.request({"type": "unsubscribe", "organization_id": "b"})
        assert reply["status"] == "unsubscribed"
        reply = await c.request({"type": "subscribe", "organization_id": "d"})
        assert reply["status"] == "subscribed"
        await still_works(srv, c)


async def test_the_limit_is_per_connection() -> None:
    async with (
        running_server(store="memory", max_subscriptions=2) as srv,
        client(srv, "a") as first,
        client(srv, "a") as second,
    ):
        for c in (first, second):
            reply = await c.request({"type": "subscribe", "organization_id": "x"})
            assert reply["status"] == "subscribed"
            reply = await c.request({"type": "subscribe", "organization_id": "y"})
            assert_error(reply, "limit_exceeded")


async def test_messages_are_rate_limited_by_default_after_a_generous_burst() -> None:
    async with running_server(store="memory") as srv, client(srv, "a") as c:
        rate = Settings().client_rate_limit
        assert rate is not None
        burst = int(rate * BURST_SECONDS)
        sent = burst + 300
        for _ in range(sent):
            await c.send({"type": "ping"})
        replies: list[dict[str, Any]] = [await c.recv() for _ in range(sent)]
        pongs = sum(r == {"status": "pong"} for r in replies)
        limited = [r for r in replies if r.get("error") == "rate_limited"]
        assert pongs + len(limited) == sent
        # The whole burst passes (a client subscribing to 1,000 channels at once is
        # fine), then about ``rate`` per second: well under 300 more in this time.
        assert burst <= pongs < burst + 200, pongs
        assert_error(limited[0], "rate_limited")
        assert f"{rate:g} per second" in limited[0]["message"]


async def test_no_rate_limit_when_turned_off() -> None:
    async with running_server(store="memory", client_rate_limit=None) as srv, client(srv) as c:
        for _ in range(1500):
            await c.send({"type": "ping"})
        replies = [await c.recv() for _ in range(1500)]
        assert all(r == {"status": "pong"} for r in replies)
