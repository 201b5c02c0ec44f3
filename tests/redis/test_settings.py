"""The Redis store's settings: bad values get a clear answer before anything starts."""

from __future__ import annotations

import argparse

import pytest

from athena_cdc.config import ConfigError, add_options, load_settings


def settings_from(*argv: str) -> object:
    parser = argparse.ArgumentParser()
    add_options(parser)
    return load_settings(parser.parse_args(list(argv)), environ={})


def test_a_redis_url_is_a_store() -> None:
    settings = settings_from("--store", "rediss://:secret@cache:6380/2")
    assert getattr(settings, "store") == "rediss://:secret@cache:6380/2"  # noqa: B009


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--store", "redis://"), "needs a host"),
        (("--store", "mongo://x"), "redis://host:port/db"),
        (("--redis-durability", "replicas:0"), "replicas:N"),
        (("--redis-durability", "always"), "none, waitaof or replicas:N"),
    ],
)
def test_bad_redis_settings_are_refused_with_the_reason(
    argv: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        settings_from(*argv)


def test_durability_modes_parse() -> None:
    for text in ("none", "waitaof", "replicas:2", "REPLICAS:1"):
        settings_from("--redis-durability", text)
