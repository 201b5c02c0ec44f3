"""``python -m bench`` (from a checkout's root): run scenarios, print, save, plot."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import jwt

from athena_cdc.bench import auth as bench_auth
from athena_cdc.bench.loadgen import LoadGen, raise_nofile_limit
from bench import charts, report
from bench.scenarios import SCENARIOS, Bench, run_scenario
from bench.servers import SERVER_KINDS, repo_root
from bench.verdicts import judge

ORDER = ("tenants", "burst", "steady", "spread", "travel", "idle", "storm", "slow")


class _OneLineParser(argparse.ArgumentParser):
    """Errors in one line pointing at --help (argparse's printed the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m bench",
        description="Benchmark athena-cdc against uWebSockets.js, nats-server, a Node.js ws "
        "and a naive Python websockets server, on this machine, with the same load generator. "
        "Run from a checkout's root. ('python -m bench redis --help': the Redis store's "
        "benchmark; against your own deployment: 'athena-cdc bench tenants --url ...'.)",
    )
    p.add_argument(
        "scenario",
        choices=[*ORDER, "all", "chart"],
        help="what to run ('chart': only redraw latest.png from latest.json)",
    )
    p.add_argument(
        "--server",
        choices=[*SERVER_KINDS, "all"],
        action="append",
        help="server(s) to run (repeatable) [default: all]",
    )
    p.add_argument(
        "--store",
        choices=["memory", "sqlite", "both"],
        help="athena-cdc store [default: per scenario; steady and travel: both]",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="save bench/results/<scenario>-<time>.json and update latest.json",
    )
    p.add_argument(
        "--plot", action="store_true", help="save a PNG chart under bench/results/ (and latest.png)"
    )
    p.add_argument("--markdown", action="store_true", help="print tables as Markdown")
    p.add_argument("--workers", type=int, default=2, help="load generator processes [default: 2]")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario parameter, e.g. --set subscribers=100",
    )
    p.add_argument(
        "--athena-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'athena-cdc serve' (repeatable)",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="run athena-cdc with auth on (--jwt-secret); clients and producers send a token",
    )
    p.add_argument(
        "--publish-via",
        choices=["http", "ws", "both"],
        default="http",
        help="how athena-cdc's producers publish in tenants: POST /events, the WebSocket "
        "publish message, or both (one run each; other servers always POST) [default: http]",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the athena-cdc server with py-spy (into the results folder)",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where to save results [default: bench/results]",
    )
    return p


def _enable_auth() -> list[str]:
    """A secret for the server (its flags, returned) and a token that reads and publishes
    everything, for the load generator (:func:`athena_cdc.bench.auth.use`)."""
    secret = secrets.token_urlsafe(48)
    claims = {"exp": int(time.time()) + 86_400, "channels": ["*"], "publish": ["*"]}
    bench_auth.use(jwt.encode(claims, secret, algorithm="HS256"))
    return [f"--jwt-secret={secret}"]


def _parse_sets(p: argparse.ArgumentParser, items: list[str], names: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items, each a parameter of a scenario that runs, of its
    default's kind (an unknown key was dropped silently, and a value of the wrong kind
    failed every row later)."""
    defaults: dict[str, Any] = {}
    for name in names:
        for key, default in SCENARIOS[name].defaults.items():
            defaults.setdefault(key, default)
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        if key not in defaults:
            p.error(
                f"--set {key}: not a parameter of {', '.join(names)}; "
                f"known: {', '.join(sorted(defaults))}"
            )
        values[key] = _parse_value(p, key, text, defaults[key])
    return values


def _parse_value(p: argparse.ArgumentParser, key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool) or not isinstance(default, int | float):
        return text if isinstance(default, str) or default is None else _as_bool(p, key, text)
    try:
        value: float = int(text) if isinstance(default, int) else float(text)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        p.error(f"--set {key}={text}: expected {kind} (default {default!r})")
    if not math.isfinite(value):
        p.error(f"--set {key}={text}: expected a finite number")
    return value


def _as_bool(p: argparse.ArgumentParser, key: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    p.error(f"--set {key}={text}: expected true or false")


def _servers(kinds: list[str], stores: tuple[str, ...]) -> list[tuple[str, str]]:
    chosen: list[tuple[str, str]] = []
    for kind in SERVER_KINDS:
        if kind in kinds:
            chosen += [(kind, s) for s in stores] if kind == "athena" else [(kind, "memory")]
    return chosen


async def run(args: argparse.Namespace) -> int:
    kinds = list(SERVER_KINDS) if not args.server or "all" in args.server else args.server
    names = list(ORDER) if args.scenario == "all" else [args.scenario]
    overrides = args.overrides
    results_dir = args.results_dir or repo_root() / "bench" / "results"
    limit = raise_nofile_limit()
    if limit < 20_000:
        print(
            f"note: open-files limit is {limit}; 10,000-connection scenarios need more",
            file=sys.stderr,
        )
    athena_args = list(args.athena_arg)
    if args.auth:
        athena_args += _enable_auth()  # before the load generator's workers start
    loadgen = LoadGen(args.workers)
    results = []
    try:
        for name in names:
            scenario = SCENARIOS[name]
            stores = (
                scenario.stores
                if args.store is None
                else (("memory", "sqlite") if args.store == "both" else (args.store,))
            )
            params = {
                **scenario.defaults,
                **{k: v for k, v in overrides.items() if k in scenario.defaults},
            }
            bench = Bench(
                loadgen,
                _servers(kinds, stores),
                athena_args,
                say=lambda text: print(text, file=sys.stderr, flush=True),
                profile_dir=results_dir if args.profile else None,
                publish_via=("http", "ws") if args.publish_via == "both" else (args.publish_via,),
            )
            started = time.monotonic()
            rows = await run_scenario(bench, scenario, params)
            result = report.stamp_result(name, scenario.target, params, rows, judge(name, rows))
            result["seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            print(report.summary(result, markdown=args.markdown), flush=True)
    finally:
        await loadgen.shutdown()
    if args.json:
        for path in report.save(results, results_dir):
            print(f"saved {path}", file=sys.stderr)
    if args.plot:
        _plot(results, results_dir, merged=args.json)
    return 0 if all(r["verdict"]["pass"] is not False for r in results) else 1


def _plot(results: list[dict[str, Any]], folder: Path, merged: bool) -> None:
    import json

    stamp = time.strftime("%Y%m%dT%H%M%S")
    scenarios = {r["scenario"]: r for r in results}
    path = charts.plot(scenarios, folder / f"chart-{stamp}.png") if scenarios else None
    if path:
        print(f"saved {path}", file=sys.stderr)
    latest = folder / "latest.json"
    if merged and latest.exists():  # the committed chart: every scenario's latest result
        everything = json.loads(latest.read_text()).get("scenarios", {})
        path = charts.plot(everything, folder / "latest.png")
        if path:
            print(f"saved {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["redis"]:  # the Redis store's own benchmark
        from bench.redis_bench import main as redis_main

        return redis_main(argv[1:])
    p = parser()
    args = p.parse_args(argv)
    most = 4 * len(os.sched_getaffinity(0))
    if not 1 <= args.workers <= most:
        p.error(f"--workers must be from 1 to {most} (4 per core)")
    names = list(ORDER) if args.scenario == "all" else [args.scenario]
    args.overrides = _parse_sets(p, args.set, names) if args.scenario != "chart" else {}
    if args.scenario == "chart":
        _plot([], args.results_dir or repo_root() / "bench" / "results", merged=True)
        return 0
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(run(args))
        return uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
