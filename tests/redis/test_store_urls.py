"""``--store`` URLs of the Redis store: Sentinel addresses parse, bad ones are refused
with the reason."""

from __future__ import annotations

import asyncio
import sys

import pytest

from athena_cdc.config import ConfigError
from athena_cdc.log.redis_url import SentinelTarget, is_redis_store, parse_sentinel_url
from tests.redis.test_settings import settings_from


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_db() -> None:
    target = parse_sentinel_url(
        "rediss+sentinel://app:s%40cret@s1:26380,s2,[::1]:26381/main/3?sentinel_password=x"
    )
    assert target == SentinelTarget(
        (("s1", 26380), ("s2", 26379), ("::1", 26381)),
        "main",
        3,
        tls=True,
        username="app",
        password="s@cret",
        sentinel_password="x",
    )
    assert parse_sentinel_url("redis+sentinel://h/main").db == 0
    assert is_redis_store("redis+sentinel://h/main") and not is_redis_store("sqlite")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel:///main/0", "at least one Sentinel"),
        ("redis+sentinel://h:26379", "names the service"),
        ("redis+sentinel://h:26379/main/x", "must be a number"),
        ("redis+sentinel://h:99999/main", "bad port"),
        ("redis+sentinel://h/main?timeout=1", "unknown Sentinel URL option"),
        ("redis+cluster://h:7000/2", "only database 0"),
        ("redis+cluster://", "at least one node"),
        ("redis+cluster://h:x", "bad port in Cluster node address 'h:x'"),
        ("redis+cluster://h:7000?foo=bar", "takes no options"),
        ("redis+cluster://[::1", "bad IPv6 address"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ],
)
def test_a_bad_sentinel_url_is_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        settings_from("--store", url)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://127.0.0.1:1/main/0?sentinel_password=hush", "redis+cluster://127.0.0.1:1"],
)
async def test_an_unreachable_sentinel_or_cluster_stops_the_server_with_one_line(
    url: str,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "athena_cdc", "serve", "--port", "0", "--store", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 2, text
    assert "cannot use Redis at" in text and "Traceback" not in text, text
    assert "hush" not in text  # the Sentinel password is not repeated
