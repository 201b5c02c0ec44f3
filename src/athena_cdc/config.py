"""Settings: one object, read from flags, ``ATHENA_CDC_*`` environment and a TOML file.

Precedence, highest first: command-line flag, environment variable, config file,
default. Every option is declared once in :data:`OPTIONS`; the flag, the environment
variable, the config-file key and the help text all come from that declaration, so
they can never disagree. Values are validated once at start; an invalid one stops
the program with a single line naming the option and how to fix it (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "ATHENA_CDC_"


class ConfigError(Exception):
    """An invalid setting; the message is one line saying what to change."""


# -- value parsers: str (from flag/env) or TOML value → typed value ---------------------

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object) -> int:
    """``4MiB``, ``512k``, ``1048576`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = _finite(value, "size"), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError("expected a size such as 4MiB, 512KiB or 1048576")
        number, unit = float(match.group(1)), match.group(2).lower()
    return int(_finite(number * _SIZE_UNITS[unit], "size"))


def parse_duration(value: object) -> float:
    """``30s``, ``15m``, ``7d``, ``250ms``, ``10`` (seconds) → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(value, "duration")
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(value).lower())
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError("expected a duration such as 250ms, 30s, 15m, 12h or 7d")
    return _finite(float(match.group(1)) * _DURATION_UNITS[match.group(2)], "duration")


def _finite(value: float, what: str) -> float:
    """``value`` as a finite float. A TOML integer of hundreds of digits made float()
    raise OverflowError (a traceback, not one line), and as many digits in text became
    inf, which later code turned into OverflowError of its own (int(inf))."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if math.isnan(number):
        raise ValueError(f"a {what} must be a number")
    if math.isinf(number):
        raise ValueError(f"{what} too large")
    return number


def format_size(size: int) -> str:
    """Bytes as ``--help`` shows them: the largest binary unit that divides evenly."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def format_duration(seconds: float) -> str:
    """Seconds as ``--help`` shows them: ``30s``, ``250ms``, ``15m``, ``7d``."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit in ("w", "d", "h", "m"):
        factor = _DURATION_UNITS[unit]
        if seconds and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"


def parse_optional_duration(value: object) -> float | None:
    if value is None or str(value).strip().lower() in ("", "none", "0", "off"):
        return None
    return parse_duration(value)


def parse_optional_rate(value: object) -> float | None:
    """``100``, ``2.5`` → per second; ``none``, ``off`` or ``0`` → no limit."""
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    try:
        rate = float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number per second such as 100 or 2.5, or none") from None
    return None if rate == 0 else rate


def parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number such as 1000")
    try:
        return int(str(value).replace("_", ""))
    except ValueError:
        raise ValueError("expected a whole number such as 1000") from None


def parse_port(value: object) -> int:
    try:
        return parse_int(value)
    except ValueError:
        raise ValueError("expected a port number between 0 and 65535, such as 4053") from None


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_str(value: object) -> str:
    return str(value)


def parse_list(value: object) -> list[str]:
    """A list in TOML, or a comma-separated string from a flag or the environment."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return text

    return parse


@dataclass(frozen=True)
class Option:
    """One setting: flag ``--name-with-dashes``, env ``ATHENA_CDC_NAME``, file key ``name``."""

    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    group: str = "server"
    metavar: str | None = None
    repeatable: bool = False  # flag may be given several times (values accumulate)
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    secret: bool = False  # never shown in an error message (it would reach the journal)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= low else f"must be at least {low}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be between 0 and 65535"


def _publish_key_problem(key: str | None) -> str | None:
    # An empty key must not quietly mean "no key": that would turn auth off.
    if key == "":
        return "must not be empty (leave it unset to publish without a key)"
    # A header value cannot carry these, so no request could ever match the key.
    if key is not None and (key != key.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in key)):
        return "must not start or end with white space nor contain control characters"
    return None


def parse_store(value: object) -> str:
    """``memory``, ``sqlite``, or a Redis URL (kept as given): ``redis://``, ``rediss://``,
    ``redis+sentinel://``, ``redis+cluster://`` (see athena_cdc.log.redis_url)."""
    from athena_cdc.log.redis_url import check_store_url, is_redis_store

    text = str(value).strip()
    if text.lower() in ("memory", "sqlite"):
        return text.lower()
    if is_redis_store(text):
        check_store_url(text)
        return text
    raise ValueError(
        "expected one of memory, sqlite, a redis://host:port/db URL, "
        "redis+sentinel://host:port/service/db or redis+cluster://host:port"
    )


def parse_workers(value: object) -> int:
    """A number of worker processes, or ``auto``: one per core this process may use."""
    if str(value).strip().lower() == "auto":
        return _cores()
    try:
        return parse_int(value)
    except ValueError:
        raise ValueError("expected a number of processes such as 2, or auto") from None


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# More workers than this only compete for the cores; a typo (--workers 100000) would
# otherwise start processes one by one for minutes and starve the whole machine.
WORKERS_PER_CORE = 4


def _workers_bound(v: int) -> str | None:
    if v < 1:
        return "must be at least 1"
    cores = _cores()
    most = WORKERS_PER_CORE * cores
    if v > most:
        return (
            f"must be at most {most} ({WORKERS_PER_CORE} per core, {cores} here); "
            "auto starts one per core"
        )
    return None


def parse_redis_durability(value: object) -> str:
    from athena_cdc.log.redis_durability import Durability

    text = str(value).strip().lower()
    Durability.parse(text)
    return text


OPTIONS: tuple[Option, ...] = (
    Option(
        "host", "127.0.0.1", parse_str, "address to listen on (0.0.0.0 for all)", metavar="ADDR"
    ),
    Option("port", 4053, parse_port, "port for WebSocket and HTTP", metavar="PORT", check=_port),
    Option(
        "store",
        "sqlite",
        parse_store,
        "event log backend: sqlite (durable, default), memory (lost on restart), or "
        "redis://host:port/db (also rediss://, redis+sentinel://host:port,.../service/db, "
        "redis+cluster://host:port,...): Redis/Valkey Streams shared by several athena-cdc "
        "processes (docs/scaling.md)",
        group="log",
        metavar="{sqlite,memory,redis://...}",
    ),
    Option(
        "data_dir",
        "./athena-cdc-data",
        parse_str,
        "directory of the sqlite log",
        group="log",
        metavar="DIR",
    ),
    Option(
        "retention_events",
        100_000,
        parse_int,
        "events kept per channel; older ones are dropped",
        group="log",
        metavar="N",
        check=_at_least(1),
    ),
    Option(
        "retention_age",
        None,
        parse_optional_duration,
        "drop events older than this (e.g. 7d, 12h); default: keep by count only",
        group="log",
        metavar="AGE",
        check=lambda v: None if v is None or v > 0 else "must be positive, or none",
    ),
    Option(
        "memory_limit",
        512 * 1024**2,
        parse_size,
        "bytes the log may hold in memory: events and per-channel state, across all "
        "channels (memory store: the whole log; sqlite: its cache)",
        group="log",
        metavar="SIZE",
        check=_at_least(1024),
    ),
    Option(
        "sqlite_synchronous",
        "full",
        choice("full", "normal"),
        "full: every acknowledged event survives power loss; normal: survives a crash "
        "of the server process but not of the machine (faster)",
        group="log",
        metavar="{full,normal}",
    ),
    Option(
        "sqlite_commit_interval",
        0.0,
        parse_duration,
        "sqlite: at least this long between the starts of two commits (0: the next "
        "commit starts when the last one ends). Under a steady stream of publishes, "
        "more events share each commit's fsync, for less CPU per event, and each waits "
        "up to this much longer; an append after a quiet spell is never held",
        group="log",
        metavar="DURATION",
        check=lambda v: None if 0 <= v <= 0.1 else "must be from 0 to 100ms",
    ),
    Option(
        "tls_cert",
        None,
        parse_str,
        "PEM certificate (chain) file: serve wss:// and https:// (needs --tls-key)",
        metavar="FILE",
    ),
    Option(
        "tls_key",
        None,
        parse_str,
        "PEM private key file of --tls-cert",
        metavar="FILE",
    ),
    Option(
        "publish_key",
        None,
        parse_str,
        "if set, POST /events requires the header X-Athena-Key with this value "
        "(a WebSocket publish message: on the upgrade request)",
        metavar="KEY",
        check=_publish_key_problem,
        secret=True,
    ),
    Option(
        "slow_consumer_limit",
        4 * 1024**2,
        parse_size,
        "unsent bytes after which a WebSocket client is closed with 4008",
        metavar="SIZE",
        check=_at_least(1024),
    ),
    Option(
        "client_rate_limit",
        100.0,
        parse_optional_rate,
        "messages per second a WebSocket client may send, travels and subscribes included "
        "(bursts of ten seconds' worth); none or 0 turns the limit off",
        metavar="N",
        check=lambda v: None if v is None or v > 0 else "must be positive, or none",
    ),
    Option(
        "publish_rate_limit",
        10_000.0,
        parse_optional_rate,
        "events per second one WebSocket connection may publish with publish messages "
        "(bursts of ten seconds' worth; they do not count against --client-rate-limit); "
        "none or 0 turns the limit off",
        metavar="N",
        check=lambda v: None if v is None or v > 0 else "must be positive, or none",
    ),
    Option(
        "ping_interval",
        30.0,
        parse_duration,
        "ping a WebSocket peer from which nothing has arrived for this long",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "shutdown_timeout",
        10.0,
        parse_duration,
        "on SIGTERM, time allowed to drain before closing",
        metavar="DURATION",
        check=lambda v: None if v >= 0 else "must not be negative",
    ),
    Option(
        "workers",
        1,
        parse_workers,
        "processes serving the port (SO_REUSEPORT); auto: one per core. With memory or "
        "sqlite, a supervisor process owns the log and the workers share it "
        "(docs/scaling.md)",
        metavar="{N,auto}",
        check=_workers_bound,
    ),
    Option("uvloop", True, parse_bool, "use uvloop when installed (true/false)", metavar="BOOL"),
    Option(
        "log_level",
        "info",
        choice("debug", "info", "warning", "error"),
        "log verbosity",
        group="logging",
        metavar="{debug,info,warning,error}",
    ),
    Option(
        "log_format",
        "text",
        choice("text", "json"),
        "text for humans, json for log pipelines",
        group="logging",
        metavar="{text,json}",
    ),
    Option(
        "source",
        [],
        parse_list,
        "PostgreSQL to stream changes from, as postgresql://user:pass@host:port/db (repeatable)",
        group="postgres",
        metavar="DSN",
        repeatable=True,
    ),
    Option(
        "pg_publication",
        "athena_cdc",
        parse_str,
        "publication to read (created if absent)",
        group="postgres",
        metavar="NAME",
    ),
    Option(
        "pg_slot",
        "athena_cdc",
        parse_str,
        "logical replication slot (pgoutput; created if absent)",
        group="postgres",
        metavar="NAME",
    ),
    Option(
        "pg_tables",
        [],
        parse_list,
        "tables of a newly created publication (a,b or schema.t); default: all tables",
        group="postgres",
        metavar="LIST",
    ),
    Option(
        "route_column",
        "organization_id",
        parse_str,
        "column whose value names a row's channel",
        group="postgres",
        metavar="COLUMN",
    ),
    Option(
        "default_channel",
        None,
        parse_str,
        "channel for rows without a routing value (default: skip them)",
        group="postgres",
        metavar="CHANNEL",
    ),
    Option(
        "pg_unroutable",
        "refuse",
        choice("refuse", "default-channel", "skip"),
        "a published table whose replica identity lacks the route column (its DELETEs and "
        "channel-moving UPDATEs have no old channel): refuse to start, or send such DELETEs "
        "to --default-channel, or skip them",
        group="postgres",
        metavar="{refuse,default-channel,skip}",
    ),
    Option(
        "on_damage",
        "refuse",
        choice("refuse", "new-epoch"),
        "when the sqlite log may have lost acknowledged events (a deleted -wal file, a "
        "truncated or replaced database): refuse to start, or continue under a new epoch "
        "(clients start every channel over)",
        group="log",
        metavar="{refuse,new-epoch}",
    ),
    # -- deadlines and connection caps (see athena_cdc.server.deadlines / .limits) --
    Option(
        "header_timeout",
        10.0,
        parse_duration,
        "request line and headers must arrive within this (408 JSON, then close)",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "body_timeout",
        30.0,
        parse_duration,
        "a request body must arrive within this once the headers are in (408 JSON)",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "keepalive_timeout",
        75.0,
        parse_duration,
        "an idle keep-alive HTTP connection is closed after this",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "tls_handshake_timeout",
        10.0,
        parse_duration,
        "the TLS handshake must complete within this (with --tls-cert)",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "max_connections",
        100_000,
        parse_int,
        "WebSocket connections the server holds; beyond, upgrades get 503 (0: no limit)",
        metavar="N",
        check=_at_least(0),
    ),
    Option(
        "max_connections_per_ip",
        1_000,
        parse_int,
        "WebSocket connections from one client address; beyond, upgrades get 429 "
        "(0: no limit; behind a proxy all clients share its address)",
        metavar="N",
        check=_at_least(0),
    ),
    Option(
        "ping_timeout",
        45.0,
        parse_duration,
        "drop a WebSocket peer from which nothing (no pong, no message) has arrived for this long",
        metavar="DURATION",
        check=lambda v: None if v > 0 else "must be positive",
    ),
    Option(
        "max_subscriptions",
        1_000,
        parse_int,
        "channels one WebSocket connection may be subscribed to at once",
        metavar="N",
        check=_at_least(1),
    ),
)

AUTH_OPTIONS: tuple[Option, ...] = (
    Option(
        "jwt_secret",
        None,
        parse_str,
        "turn auth on: HS256 secret (32+ bytes) that signs clients' JWTs",
        group="auth",
        metavar="SECRET",
        check=lambda v: None if v is None or len(v.encode()) >= 32 else "must be 32+ bytes",
        secret=True,
    ),
    Option(
        "jwt_public_key",
        None,
        parse_str,
        "turn auth on: PEM public key (RSA: RS256, P-256: ES256) that verifies JWTs",
        group="auth",
        metavar="FILE",
    ),
    Option(
        "jwks",
        None,
        parse_str,
        "turn auth on: JWKS file of public keys chosen by the token's kid (re-read on SIGHUP)",
        group="auth",
        metavar="FILE",
    ),
    Option("jwt_audience", None, parse_str, "required aud claim", group="auth", metavar="AUD"),
    Option("jwt_issuer", None, parse_str, "required iss claim", group="auth", metavar="ISS"),
    Option(
        "jwt_leeway",
        5.0,
        parse_duration,
        "clock skew allowed on exp/nbf (at most 30s)",
        group="auth",
        metavar="DURATION",
        check=lambda v: None if 0 <= v <= 30 else "must be between 0s and 30s",
    ),
    Option(
        "allowed_origins",
        [],
        parse_list,
        "browser Origins allowed to connect (e.g. https://app.example.com); default any — "
        "unsafe on a public address with auth off",
        group="auth",
        metavar="LIST",
    ),
    Option(
        "protect_ops",
        False,
        parse_bool,
        "require an admin token or --ops-key for /metrics (/health and /ready stay open)",
        group="auth",
        metavar="BOOL",
    ),
    Option(
        "ops_key",
        None,
        parse_str,
        "bearer key for /metrics when --protect-ops is on (e.g. for Prometheus)",
        group="auth",
        metavar="KEY",
        check=lambda v: None if v is None or len(v) >= 16 else "must be 16+ characters",
        secret=True,
    ),
    Option(
        "redis_durability",
        "none",
        parse_redis_durability,
        "with a redis:// store, when a publish is acknowledged: none (Redis took it), "
        "waitaof (fsynced to the AOF, Redis >= 7.2 / Valkey), replicas:N (N replicas "
        "have it); see docs/scaling.md",
        group="log",
        metavar="{none,waitaof,replicas:N}",
    ),
    Option(
        "redis_cache_bytes",
        64 * 1024**2,
        parse_size,
        "with a Redis store, bytes of recently delivered events each process keeps to "
        "answer travels while Redis is unreachable (0: none)",
        group="log",
        metavar="SIZE",
        check=lambda v: None if v >= 0 else "must not be negative",
    ),
)
OPTIONS = OPTIONS + AUTH_OPTIONS

_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 4053
    store: str = "sqlite"
    data_dir: str = "./athena-cdc-data"
    retention_events: int = 100_000
    retention_age: float | None = None
    memory_limit: int = 512 * 1024**2
    sqlite_synchronous: str = "full"
    sqlite_commit_interval: float = 0.0
    tls_cert: str | None = None
    tls_key: str | None = None
    publish_key: str | None = None
    slow_consumer_limit: int = 4 * 1024**2
    client_rate_limit: float | None = 100.0
    publish_rate_limit: float | None = 10_000.0
    ping_interval: float = 30.0
    shutdown_timeout: float = 10.0
    workers: int = 1
    uvloop: bool = True
    log_level: str = "info"
    log_format: str = "text"
    source: list[str] = field(default_factory=list)
    pg_publication: str = "athena_cdc"
    pg_slot: str = "athena_cdc"
    pg_tables: list[str] = field(default_factory=list)
    route_column: str = "organization_id"
    default_channel: str | None = None
    pg_unroutable: str = "refuse"
    on_damage: str = "refuse"
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    tls_handshake_timeout: float = 10.0
    max_connections: int = 100_000
    max_connections_per_ip: int = 1_000
    ping_timeout: float = 45.0
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwks: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 5.0
    allowed_origins: list[str] = field(default_factory=list)
    protect_ops: bool = False
    ops_key: str | None = None
    max_subscriptions: int = 1_000
    redis_durability: str = "none"
    redis_cache_bytes: int = 64 * 1024**2
    # Per-table channel overrides from the config file: {"schema.table": "channel"}.
    pg_table_channels: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    # Plain POST /events answered without aiohttp's per-request machinery (the same
    # answers; server/publish_lane.py). Not an option: off only to compare, in tests.
    publish_lane: bool = True


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every option as a flag, grouped for ``--help``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file of settings (keys as the flags, without --); env {ENV_PREFIX}CONFIG",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    titles = {
        "server": "server",
        "log": "event log",
        "logging": "logging",
        "postgres": "PostgreSQL source",
        "auth": "authentication (off unless a JWT key is given)",
    }
    for option in OPTIONS:
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(titles[option.group])
        group.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            action="append" if option.repeatable else "store",
            metavar=option.metavar,
            help=f"{option.help} [default: {_shown_default(option)}; env {option.env}]",
        )


def _shown_default(option: Option) -> str:
    """The default as a user would write it: ``512MiB`` not 536870912, ``30s`` not 30.0."""
    default = option.default
    if default is None or default == []:
        return "none"
    if option.parse is parse_size:
        return format_size(default)
    if option.parse in (parse_duration, parse_optional_duration):
        return format_duration(default)
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, list):
        return ",".join(default)
    return str(default)


def load_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment and config file into validated :class:`Settings`."""
    environ = os.environ if environ is None else environ
    config_path = getattr(args, "config", None)
    config_origin = "--config"
    if not config_path and environ.get(ENV_PREFIX + "CONFIG"):
        config_path, config_origin = environ[ENV_PREFIX + "CONFIG"], ENV_PREFIX + "CONFIG"
    file_values: dict[str, Any] = {}
    settings = Settings(config_file=config_path)
    if config_path:
        file_values = _read_config_file(Path(config_path), config_origin)
        settings.pg_table_channels = _table_channels(file_values.pop("tables", {}))
        for key in file_values:
            if key not in _BY_NAME:
                raise ConfigError(f"config file {config_path}: unknown setting {key!r}")
    for option in OPTIONS:
        raw: Any = getattr(args, option.name, None)
        origin = option.flag
        if raw is not None and option.repeatable:
            raw = [item for value in raw for item in parse_list(value)]
        if raw is None and option.env in environ:
            raw, origin = environ[option.env], option.env
        if raw is None and option.name in file_values:
            raw, origin = file_values[option.name], f"{option.name} in {config_path}"
        if raw is None:
            continue
        try:
            value = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}: invalid value {_shown(option, raw)}: {exc}") from None
        problem = option.check(value) if option.check else None
        if problem:
            raise ConfigError(f"{origin}: {problem} (got {_shown(option, raw)})")
        setattr(settings, option.name, value)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    keys = [settings.jwt_secret, settings.jwt_public_key, settings.jwks]
    if sum(k is not None for k in keys) > 1:
        raise ConfigError("give one of --jwt-secret, --jwt-public-key, --jwks, not several")
    if settings.protect_ops and keys == [None, None, None] and settings.ops_key is None:
        raise ConfigError("--protect-ops needs a way in: --ops-key, or a JWT key (admin tokens)")
    return settings


def _shown(option: Option, raw: object) -> str:
    """The value as given, for an error message; a secret only by its length."""
    if option.secret:
        return f"a secret of {len(str(raw))} characters"
    return repr(raw)


def _read_config_file(path: Path, origin: str = "--config") -> dict[str, Any]:
    named = f"{origin} {str(path)!r}"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{named}: does not exist; give the path of a TOML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{named}: is a directory; give the path of a TOML file") from None
    except OSError as exc:
        raise ConfigError(
            f"{named}: cannot be read ({exc.strerror or exc}); give a TOML file that the user "
            "running athena-cdc can read"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{named}: is not UTF-8 text; give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{named}: is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


def _table_channels(tables: object) -> dict[str, str]:
    """``[tables."public.orders"] channel = "orders"`` → ``{"public.orders": "orders"}``."""
    if not isinstance(tables, dict):
        raise ConfigError('config file: [tables] must be a table of "schema.table" entries')
    result: dict[str, str] = {}
    for name, spec in tables.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("channel"), str):
            raise ConfigError(f'config file: [tables."{name}"] needs channel = "<name>"')
        qualified = name if "." in name else f"public.{name}"
        result[qualified] = spec["channel"]
    return result
