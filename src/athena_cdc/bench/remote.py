"""``athena-cdc bench``: load a running athena-cdc (your own deployment) and measure it.

The same load as the comparison harness's ``tenants`` scenario (``bench/`` in a
checkout): many channels with a few WebSocket subscribers each, several producers each
publishing one event per ``POST /events`` on their own schedule. It reports what the
server held (publishes/s against the rate asked), how long a publish took to be answered,
publish -> receive latency (the payload carries the publish time; the clock is this
machine's on both ends) and whether every client got every event of its channel, once,
in order. It cannot see the server's CPU (another machine, or another process tree), so
unlike the harness it compares nothing; run the harness from a checkout for that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import SplitResult, urlsplit

from athena_cdc.bench import auth as bench_auth
from athena_cdc.bench.loadgen import LoadGen, raise_nofile_limit
from athena_cdc.bench.procstat import own_cpu_seconds
from athena_cdc.bench.publisher import HttpError, Publisher, pad_for, publish_producers
from athena_cdc.bench.stats import completeness, latency_summary, percentile

DEFAULT_URL = "ws://127.0.0.1:4053/ws"
# The tenants load: the harness (bench/scenarios.py) takes these too, so the figures of
# both read the same.
DEFAULTS: dict[str, Any] = {
    "channels": 1000,
    "subscribers": 2,
    "producers": 8,
    "rate": 2000,
    "duration_s": 5.0,
    "warmup_s": 1.0,
    "payload_bytes": 200,
    "parse_every": 1,
    "timeout": 30.0,
}

# Bounds of the options: beyond them a run is a typo, not a measurement (a rate of 1e30
# made the producers plan that many publishes; 2e11 channels hung building their names).
MAX_RATE = 1_000_000.0
MAX_SECONDS = 86_400.0  # --duration, --warmup
MAX_TIMEOUT = 3_600.0
MAX_PAYLOAD_BYTES = 1024 * 1024
FALLBACK_LOCAL_PORTS = 28_232  # Linux's default ip_local_port_range, 32768-60999

DESCRIPTION = """\
Load a running athena-cdc with the 'tenants' shape and measure it: CHANNELS channels
(named PREFIX00000, PREFIX00001, ...) with SUBSCRIBERS WebSocket clients each, and
PRODUCERS producers publishing one event per POST /events, RATE publishes/s in all,
for DURATION seconds after a warm-up.

It prints the publishes/s the server held against the rate asked, how long a POST took
to be answered (p50/p99), publish -> receive latency (p50/p99, timed with this machine's
clock at both ends) and per-client completeness: every client got every event of its
channel, once, in order. Exit code 0 when every client was complete, 1 otherwise.

No CPU figures: the server's CPU is not visible from here (it may be another machine),
so nothing is compared with other servers. The comparison with uWebSockets.js,
nats-server, Node.js ws and a naive Python server runs from a checkout:
python -m bench --help.
"""

EPILOG = """\
notes:
  The events go to real channels of that server (PREFIX, default 'bench-t'): use a
  deployment, or a prefix, whose channels nobody else reads. All connections come from
  this machine's address: the server's --max-connections-per-ip (1,000 by default) must
  allow CHANNELS x SUBSCRIBERS of them. With auth on, the token must allow reading and
  publishing the bench's channels. TLS (wss://, https://) uses the system's CAs.

examples:
  athena-cdc bench tenants --url ws://10.0.0.5:4053/ws
  athena-cdc bench tenants --url wss://cdc.example.com/ws --token-file tok --channels 200
  athena-cdc bench tenants --rate 5000 --duration 10 --json > run.json
"""


class _OneLineParser(argparse.ArgumentParser):
    """Errors in one line pointing at --help, as ``athena-cdc serve``'s: argparse's own
    printed the whole usage first, and the one line that matters scrolled away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="athena-cdc bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("scenario", choices=["tenants"], help="the load shape (only 'tenants')")
    p.add_argument(
        "--url", default=DEFAULT_URL, help=f"the server's WebSocket URL [default: {DEFAULT_URL}]"
    )
    p.add_argument(
        "--publish-url",
        metavar="URL",
        help="where to POST /events [default: the --url's host and port, http(s)]",
    )
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="JWT", help="a token, sent as Authorization: Bearer")
    token.add_argument("--token-file", metavar="FILE", type=Path, help="read the token from FILE")
    p.add_argument("--key", metavar="KEY", help="the server's --publish-key (header X-Athena-Key)")
    p.add_argument("--prefix", default="bench-t", help="channel name prefix [default: bench-t]")
    for name, kind, text in (
        ("channels", int, "channels"),
        ("subscribers", int, "WebSocket clients per channel"),
        ("producers", int, "producers publishing side by side"),
        ("rate", float, "publishes per second, all producers together"),
        ("duration", float, "seconds of measured load"),
        ("warmup", float, "seconds of load before it, not measured"),
        ("payload-bytes", int, "bytes per event payload"),
        (
            "timeout",
            float,
            "seconds to wait for the last deliveries, and for each client's subscribed",
        ),
    ):
        key = {"duration": "duration_s", "warmup": "warmup_s"}.get(name, name.replace("-", "_"))
        p.add_argument(
            f"--{name}",
            dest=key,
            type=kind,
            metavar=name.split("-")[0].upper(),
            default=DEFAULTS[key],
            help=f"{text} [default: {DEFAULTS[key]:g}]",
        )
    p.add_argument("--workers", type=int, default=2, help="load generator processes [default: 2]")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def _check(args: argparse.Namespace, p: argparse.ArgumentParser) -> str:
    """Validate the options; return the publish URL."""
    ws = _url(p, "--url", args.url, ("ws", "wss"), "ws://host:port/ws or wss://...")
    publish_url = args.publish_url or (f"{'https' if ws.scheme == 'wss' else 'http'}://{ws.netloc}")
    _url(p, "--publish-url", publish_url, ("http", "https"), "http://host:port or https://...")
    for name in ("channels", "subscribers", "producers", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name, low, high in (
        ("rate", 0.0, MAX_RATE),
        ("duration_s", 0.0, MAX_SECONDS),
        ("timeout", 0.0, MAX_TIMEOUT),
    ):
        value = getattr(args, name)
        if not (math.isfinite(value) and low < value <= high):
            option = name.removesuffix("_s")
            p.error(f"--{option} must be above {low:g} and at most {high:,.0f}")
    if not (math.isfinite(args.warmup_s) and 0 <= args.warmup_s <= MAX_SECONDS):
        p.error(f"--warmup must be from 0 to {MAX_SECONDS:,.0f}")
    if not 0 <= args.payload_bytes <= MAX_PAYLOAD_BYTES:
        p.error(f"--payload-bytes must be from 0 to {MAX_PAYLOAD_BYTES:,} (1 MiB)")
    ports = _local_ports()
    connections = args.channels * args.subscribers
    if connections > ports:
        # Each client takes one of this machine's local ports to the one server address.
        p.error(
            f"--channels x --subscribers: {connections:,} connections, more than the "
            f"{ports:,} local ports this machine has for one server address"
        )
    if args.producers > args.channels:
        p.error(
            f"--producers ({args.producers}) must be at most --channels ({args.channels}): "
            "each producer publishes to its own share of the channels"
        )
    most = 4 * len(os.sched_getaffinity(0))
    if args.workers > most:
        p.error(f"--workers must be at most {most} (4 per core)")
    if args.token_file is not None:
        try:
            args.token = args.token_file.read_text().strip()
        except OSError as exc:
            p.error(f"--token-file {str(args.token_file)!r}: {exc.strerror or exc}")
    return publish_url


def _url(
    p: argparse.ArgumentParser, option: str, url: str, schemes: tuple[str, ...], expected: str
) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError as exc:
        p.error(f"{option} {url!r}: {exc}; expected {expected}")
    if parts.scheme not in schemes or not parts.hostname:
        p.error(f"{option} {url!r}: expected {expected}")
    return parts


def _local_ports() -> int:
    """How many connections this machine can open to one server address and port."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return FALLBACK_LOCAL_PORTS
    return max(1, high - low + 1)


def _publisher(publish_url: str, key: str | None) -> Publisher:
    url = urlsplit(publish_url)
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    path = url.path.rstrip("/") + "/events"
    headers = {"X-Athena-Key": key} if key else {}
    return Publisher(url.hostname or "", port, tls=tls, headers=headers, path=path)


async def tenants(
    loadgen: LoadGen, url: str, publish_url: str, key: str | None, p: dict[str, Any], say: Any
) -> dict[str, Any]:
    """One tenants run against the server at ``url``; the figures as a dict."""
    channels = [f"{p['prefix']}{i:05d}" for i in range(p["channels"])]
    names = [name for name in channels for _ in range(p["subscribers"])]
    say(f"connecting {len(names):,} clients to {url} ...")
    started = time.monotonic()
    connected = await loadgen.connect(
        url, names, parse_every=p["parse_every"], handshake_s=p["timeout"]
    )
    if connected["failed"]:
        # Some in, the rest refused: most likely the server's cap per client address.
        hint = " (is the server's --max-connections-per-ip high enough?)"
        raise RuntimeError(
            f"{connected['failed']:,} of {len(names):,} connections to {url} failed, e.g. "
            f"{connected['errors'][0]}{hint if connected['connected'] else ''}"
        )
    connect_s = time.monotonic() - started
    producers = p["producers"]
    publishers = [_publisher(publish_url, key) for _ in range(producers)]
    shares = [channels[k::producers] for k in range(producers)]
    pad = pad_for(p["payload_bytes"])
    try:
        for publisher in publishers:
            try:
                await publisher.connect()
            except OSError as exc:
                raise RuntimeError(f"cannot connect to {publish_url}: {exc}") from None
        if p["warmup_s"] > 0:
            say(f"warming up for {p['warmup_s']:g} s ...")
            warm = int(p["rate"] * p["warmup_s"])
            await publish_producers(publishers, shares, p["rate"], warm, pad)
            await asyncio.sleep(0.5)
        await loadgen.reset()
        total = int(p["rate"] * p["duration_s"])
        own0 = own_cpu_seconds()
        report = await publish_producers(publishers, shares, p["rate"], total, pad, say=say)
        producer_cpu = own_cpu_seconds() - own0
        expected = {name: report.per_channel.get(name, 0) for name in channels}
        per_worker = [sum(expected[n] for n in share) for share in loadgen.assigned]
        reached = await loadgen.wait(per_worker, within_s=p["timeout"])
        stats = await loadgen.stats(expected)
    finally:
        for publisher in publishers:
            await publisher.close()
    expected_total = sum(per_worker)
    post_ms = sorted(int(ms * 1000) for ms in report.post_ms)
    return {
        "scenario": "tenants",
        "url": url,
        "publish_url": publish_url,
        "params": {k: v for k, v in p.items() if k != "prefix"},
        "connections": len(names),
        "connect_s": connect_s,
        "published": report.events,
        "publish_rate": report.rate,
        "wall_s": report.seconds,
        "ack_p50_ms": percentile(post_ms, 0.5) / 1000,
        "ack_p99_ms": percentile(post_ms, 0.99) / 1000,
        **latency_summary(stats["latencies_us"]),
        # Here a gap or a duplicate also makes the run incomplete (exit 1).
        **completeness(
            stats, expected_total, reached and stats["gaps"] == stats["duplicates"] == 0
        ),
        "client_cpu_s": stats["client_cpu_s"],
        "producer_cpu_s": producer_cpu,
    }


def summary(row: dict[str, Any]) -> str:
    """The figures as a few lines of text."""
    p = row["params"]
    verdict = (
        "every client got every event of its channel, once, in order"
        if row["complete"]
        else "INCOMPLETE"
    )
    return "\n".join(
        [
            f"tenants against {row['url']} (POST {row['publish_url']}/events): "
            f"{p['channels']:,} channels x {p['subscribers']} subscribers, "
            f"{p['producers']} producers",
            f"publishes   {row['published']:,} in {row['wall_s']:.2f} s: "
            f"{row['publish_rate']:,.0f}/s held of {p['rate']:,.0f}/s asked; "
            f"POST answered p50 {row['ack_p50_ms']:.2f} ms, p99 {row['ack_p99_ms']:.2f} ms",
            f"latency     publish -> receive p50 {row['p50_ms']:.2f} ms, "
            f"p90 {row['p90_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
            f"max {row['max_ms']:.2f} ms ({row['samples']:,} samples)",
            f"delivered   {row['received']:,} of {row['expected']:,} "
            f"(lost {row['lost']:,}, excess {row['excess']:,}); clients short "
            f"{row['clients_short']:,}, over {row['clients_excess']:,}; gaps {row['gaps']:,}, "
            f"duplicates {row['duplicates']:,}: {verdict}",
            f"this machine: load generator {row['client_cpu_s']:.2f} CPU-s, producers "
            f"{row['producer_cpu_s']:.2f} CPU-s (the server's CPU is not seen from here)",
        ]
    )


async def run(args: argparse.Namespace, publish_url: str) -> int:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    limit = raise_nofile_limit()
    connections = args.channels * args.subscribers
    if limit < connections + 100:
        say(f"note: open-files limit is {limit}; {connections:,} connections need more")
    if args.token:
        bench_auth.use(args.token)  # before the load generator's workers start
    params = {**DEFAULTS, **{k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)}}
    params["prefix"] = args.prefix
    loadgen = LoadGen(args.workers)
    try:
        row = await tenants(loadgen, args.url, publish_url, args.key, params, say)
    except (OSError, EOFError, RuntimeError, ValueError, HttpError) as exc:
        print(f"athena-cdc bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        await loadgen.shutdown()
    print(json.dumps(row) if args.json else summary(row), flush=True)
    return 0 if row["complete"] else 1


# The comparison harness's commands, which start servers here: not in the package.
HARNESS = ("burst", "steady", "spread", "travel", "idle", "storm", "slow", "all", "chart", "redis")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in HARNESS:
        print(
            f"athena-cdc bench: error: {argv[0]!r} starts servers on this machine to compare "
            f"them; it runs from a checkout of athena-cdc: python -m bench {argv[0]} "
            "(see docs/performance.md). Here: athena-cdc bench tenants --url ws://HOST:PORT/ws",
            file=sys.stderr,
        )
        return 2
    p = parser()
    args = p.parse_args(argv)
    publish_url = _check(args, p)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(run(args, publish_url))
        return uvloop.run(run(args, publish_url))
    except KeyboardInterrupt:
        return 130
