"""``--store`` URLs of the Redis store, and the redis-py client each one gives.

* ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS) -- one Redis, as
  redis-py's ``from_url`` reads it (query options included);
* ``redis+cluster://[user:password@]host:port,host2:port`` (``rediss+cluster://``) --
  a Redis Cluster, found from any of these nodes (database 0, the only one there is);
* ``redis+sentinel://[user:password@]host:port,host2:port/service/db``
  (``rediss+sentinel://``) -- the primary that the Sentinels at those addresses name
  for ``service``; the client asks them again whenever it connects, so after a
  failover it follows the new primary. The credentials are the primary's; Sentinels
  that need a password take it as ``?sentinel_password=...``.

Parsing is kept free of redis-py imports at module level: config.py uses it to check
the option (a plain URL's query options are checked by redis-py's own reader).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

PLAIN_SCHEMES = ("redis", "rediss")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = PLAIN_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES
DEFAULT_SENTINEL_PORT = 26379


def reason(exc: BaseException) -> str:
    """A redis-py error as one short line: its Sentinel errors embed the client's repr,
    settings and all (a Sentinel password among them), which must not reach a log line
    or a 503 body."""
    text = str(exc)
    if " : <" in text:
        head, _, rest = text.partition(" : <")
        last = rest.rpartition(" - ")[2] if " - " in rest else ""
        text = f"{head} ({last})" if last else head
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def safe_url(url: str) -> str:
    """``url`` without its secrets (the password before ``@``, a Sentinel password), for
    logs and messages."""
    url = re.sub(r"//[^@/]*@", "//***@", url)
    return re.sub(r"(sentinel_password=)[^&]*", r"\1***", url)


def is_redis_store(store: str) -> bool:
    scheme, sep, _ = store.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _host_port(text: str, default_port: int, kind: str = "Sentinel") -> tuple[str, int]:
    if text.startswith("["):  # [ipv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad IPv6 address in {kind} address {text!r}: [host]:port")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"a {kind} address needs a host, got {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {kind} address {text!r}")
    return host, int(port_text)


def _split_netloc(netloc: str) -> tuple[str | None, str | None, str]:
    """``[user[:password]@]hosts`` of a Sentinel or Cluster URL: (user, password, hosts)."""
    credentials, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, secret = credentials.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None, hosts


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:pw@]h1:26379,h2:26379/service[/db][?sentinel_password=]``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service/db")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username, password, hosts = _split_netloc(netloc)
    addresses = tuple(
        _host_port(h.strip(), DEFAULT_SENTINEL_PORT) for h in hosts.split(",") if h.strip()
    )
    if not addresses:
        raise ValueError(
            "a Sentinel URL needs at least one Sentinel: redis+sentinel://host:26379/service/db"
        )
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("a Sentinel URL names the service after the hosts: .../mymaster/0")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"the database must be a number, got {parts[1]!r}")
        db = int(parts[1])
    options = parse_qs(query)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ValueError(
            f"unknown Sentinel URL option {sorted(unknown)[0]!r} (known: sentinel_password)"
        )
    sentinel_password = options.get("sentinel_password", [None])[-1]
    return SentinelTarget(
        addresses,
        unquote(parts[0]),
        db,
        tls=scheme.lower().startswith("rediss"),
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A parsed ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterTarget:
    """``redis+cluster://[user:pw@]h1:7000,h2:7001[/]``: the nodes to start from."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("expected redis+cluster://host:port[,host:port...]")
    rest, _, query = rest.partition("?")
    if query:
        raise ValueError(f"a Cluster URL takes no options, got ?{query}")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: redis+cluster://host:port")
    username, password, hosts = _split_netloc(netloc)
    nodes = tuple(
        _host_port(h.strip(), 6379, "Cluster node") for h in hosts.split(",") if h.strip()
    )
    if not nodes:
        raise ValueError("a Cluster URL needs at least one node: redis+cluster://host:port")
    return ClusterTarget(nodes, scheme.lower().startswith("rediss"), username, password)


def check_store_url(url: str) -> None:
    """Raise ValueError (one line) if ``url`` is not a usable Redis store URL."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        parse_cluster_url(url)
    elif scheme.lower() in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
    elif not rest or rest.startswith("/"):
        raise ValueError("a Redis URL needs a host: redis://host:port/db")
    else:
        # redis-py reads the query options (socket_timeout=...) when it connects, and a bad
        # one would end the start with its traceback: read them now, like it will.
        from redis.connection import parse_url

        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ValueError(str(exc).rstrip(".")) from None


def connect(url: str, **options: Any) -> Any:
    """A redis-py asyncio client for ``url``; ``options`` are connection options
    (timeouts). A Sentinel URL gives a client of the current primary."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    if is_cluster(url):
        cluster = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username,
            password=cluster.password,
            ssl=cluster.tls,
            **options,
        )
    if url.partition("://")[0].lower() not in SENTINEL_SCHEMES:
        return aioredis.from_url(url, **options)  # type: ignore[no-untyped-call]
    target = parse_sentinel_url(url)
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.sentinel_password is not None:
        sentinel_options["password"] = target.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_options
    )
    if target.tls:
        options["ssl"] = True
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
