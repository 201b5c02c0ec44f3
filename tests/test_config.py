"""Settings from flags, environment and file; invalid ones stop with one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from athena_cdc.cli import build_parser
from athena_cdc.config import ConfigError, load_settings, parse_duration, parse_size


def settings_from(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_settings(build_parser().parse_args(["serve", *argv]), env or {})


def test_defaults_are_the_documented_ones() -> None:
    s = settings_from([])
    assert (s.host, s.port, s.store, s.data_dir) == (
        "127.0.0.1",
        4053,
        "sqlite",
        "./athena-cdc-data",
    )
    assert (s.retention_events, s.retention_age, s.publish_key) == (100_000, None, None)


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "athena.toml"
    config.write_text(
        'port = 1111\nstore = "memory"\nretention-age = "7d"\n[tables."orders"]\nchannel = "shop"\n'
    )
    s = settings_from(["--config", str(config)])
    assert (s.port, s.store, s.retention_age) == (1111, "memory", 7 * 86400)
    assert s.pg_table_channels == {"public.orders": "shop"}
    s = settings_from(["--config", str(config)], {"ATHENA_CDC_PORT": "2222"})
    assert s.port == 2222
    s = settings_from(["--config", str(config), "--port", "3333"], {"ATHENA_CDC_PORT": "2222"})
    assert s.port == 3333


def test_repeatable_and_list_options() -> None:
    s = settings_from(
        [
            "--source",
            "postgresql://a/x",
            "--source",
            "postgresql://b/y",
            "--pg-tables",
            "orders, public.items",
        ]
    )
    assert s.source == ["postgresql://a/x", "postgresql://b/y"]
    assert s.pg_tables == ["orders", "public.items"]


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--port", "99999"], {}, "--port"),
        (["--store", "mongo"], {}, "--store"),
        ([], {"ATHENA_CDC_RETENTION_EVENTS": "0"}, "ATHENA_CDC_RETENTION_EVENTS"),
        ([], {"ATHENA_CDC_RETENTION_AGE": "soon"}, "ATHENA_CDC_RETENTION_AGE"),
        (["--slow-consumer-limit", "4 parsecs"], {}, "--slow-consumer-limit"),
        (["--retention-age", "0s"], {}, "--retention-age"),
        (["--ping-interval", "0"], {}, "--ping-interval"),
    ],
)
def test_invalid_values_name_the_option(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        settings_from(argv, env)


def test_units() -> None:
    assert parse_size("4MiB") == 4 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    assert parse_duration("250ms") == 0.25
    assert parse_duration("12h") == 12 * 3600


def test_invalid_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--store", "mongo"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--store" in lines[0] and "memory, sqlite" in lines[0]


def test_unknown_key_in_config_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        settings_from(["--config", str(config)])


def test_help_lists_every_option_with_its_environment_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for name in ("--port", "--store", "--retention-age", "--publish-key", "--source"):
        assert name in result.stdout
    assert "ATHENA_CDC_PORT" in result.stdout


def test_tls_certificate_and_key_go_together() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        settings_from(["--tls-cert", "cert.pem"])


def test_the_readme_configuration_table_lists_every_option() -> None:
    """The README's table is written by hand: this keeps it from missing an option."""
    from pathlib import Path

    from athena_cdc.config import OPTIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [
        o.flag for o in OPTIONS if f"| `{o.flag}`" not in readme and f"`{o.flag}` /" not in readme
    ]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_secrets_are_never_echoed_in_configuration_errors() -> None:
    parser = build_parser()
    for argv in (["--jwt-secret", "too-short-but-secret"], ["--ops-key", "short-secret"]):
        with pytest.raises(ConfigError) as error:
            load_settings(parser.parse_args(["serve", *argv]), environ={})
        assert "secret" in str(error.value) and argv[1] not in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_settings(parser.parse_args(["serve"]), environ={"ATHENA_CDC_PUBLISH_KEY": " padded "})
    assert " padded " not in str(error.value)


def test_help_shows_defaults_as_a_user_would_write_them() -> None:
    import argparse

    from athena_cdc.config import add_options

    parser = argparse.ArgumentParser()
    add_options(parser)
    text = " ".join(parser.format_help().split())
    for shown in (
        "[default: 512MiB;",
        "[default: 4MiB;",
        "[default: 30s;",
        "[default: 75s;",
        "[default: 5s;",
        "[default: 100;",
        "[default: true;",
    ):
        assert shown in text
    assert "536870912" not in text and "30.0" not in text and "75.0" not in text


def test_every_shown_default_parses_back_to_the_default() -> None:
    from athena_cdc.config import OPTIONS, _shown_default

    for option in OPTIONS:
        shown = _shown_default(option)
        if option.default in (None, []):
            assert shown == "none"
            continue
        assert option.parse(shown) == option.default, (option.name, shown)


HUGE = "9" * 400  # a float overflows to inf; an int is too large for float()


@pytest.mark.parametrize(
    ("option", "raw"),
    [
        ("sqlite_commit_interval", HUGE),  # TOML integer: float() raised OverflowError
        ("memory_limit", HUGE),
        ("memory_limit", f'"{HUGE}"'),  # int(inf): OverflowError
        ("retention_age", f'"{HUGE}s"'),  # inf seconds: accepted, then pruning failed
        ("ping_interval", HUGE),
    ],
)
def test_values_too_large_for_a_number_name_the_option(
    tmp_path: Path, option: str, raw: str
) -> None:
    config = tmp_path / "huge.toml"
    config.write_text(f"{option} = {raw}\n")
    with pytest.raises(ConfigError, match=option):
        settings_from(["--config", str(config)])


def test_a_value_too_large_for_a_number_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "huge.toml"
    config.write_text(f"sqlite_commit_interval = {HUGE}\n")
    result = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sqlite_commit_interval" in lines[0]
