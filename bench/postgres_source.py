"""Benchmark of the PostgreSQL source: commit → WebSocket latency, and WAL → log rows/s.

    python -m bench.postgres_source [--dsn postgresql://...]

Without ``--dsn`` a throwaway cluster is started with ``tests/pg_cluster.py`` (run
from a checkout). The latency part runs ``athena-cdc serve`` as a subprocess with a
sqlite log and a WebSocket client subscribed to the channel; each row carries the
wall-clock time just before its INSERT (autocommit), so latency is commit → frame
received, including PostgreSQL's own commit. The throughput part streams a
100,000-row transaction and 100 transactions of 1,000 rows into a sqlite log
in-process and times commit → durable in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2

from athena_cdc.config import Settings
from athena_cdc.log.sqlite import SqliteLog
from athena_cdc.sources.postgres.source import PostgresSource


@dataclass
class Latency:
    rate: float
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def _execute(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(dsn: str, slot: str, data_dir: str) -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "athena_cdc",
            "serve",
            "--port",
            str(port),
            "--source",
            dsn,
            "--pg-slot",
            slot,
            "--store",
            "sqlite",
            "--data-dir",
            data_dir,
            "--log-level",
            "warning",
        ],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("athena-cdc did not become ready")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


async def latency(dsn: str, port: int, rate: float, duration: float) -> Latency:
    """Insert ``rate`` single-row commits per second; time each until its frame arrives."""
    from websockets.asyncio.client import connect

    channel = f"bench-{rate:g}"
    received: list[float] = []
    total = int(rate * duration)
    async with connect(
        f"ws://127.0.0.1:{port}/ws", additional_headers={"X-Athena-Client": channel}
    ) as ws:
        await ws.recv()  # subscribed

        def write() -> None:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            cur = conn.cursor()
            start = time.perf_counter()
            for i in range(total):
                pause = start + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                cur.execute(
                    "INSERT INTO bench_latency (organization_id, sent_ns) VALUES (%s, %s)",
                    (channel, time.time_ns()),
                )
            conn.close()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while len(received) < total:
            message: Any = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            now = time.time_ns()
            sent = message["data"]["payload"]["new"]["sent_ns"]
            received.append((now - sent) / 1e6)
        writer.join()
    ordered = sorted(received)
    return Latency(
        rate,
        len(ordered),
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


async def throughput(dsn: str, slot: str, data_dir: str) -> dict[str, float]:
    """Rows/s from commit to durable in a sqlite log (synchronous=full), in-process."""
    log = SqliteLog(data_dir, retention_events=1_000_000, memory_limit=64 * 1024**2)
    await log.open()
    source = PostgresSource(dsn, Settings(pg_slot=slot), log)
    await source.start()
    results: dict[str, float] = {}
    try:
        for label, statements, rows in (
            (
                "one 100,000-row transaction",
                [
                    "INSERT INTO bench_rows (organization_id, body) SELECT 'bulk', "
                    "repeat(md5(g::text), 4) FROM generate_series(1, 100000) g"
                ],
                100_000,
            ),
            (
                "100 transactions of 1,000 rows",
                [
                    "INSERT INTO bench_rows (organization_id, body) SELECT 'batches', "
                    "repeat(md5(g::text), 4) FROM generate_series(1, 1000) g"
                ]
                * 100,
                100_000,
            ),
        ):
            channel = label and statements[0].split("'")[1]
            before = log.bounds(channel).last_seq
            started = time.perf_counter()
            await asyncio.to_thread(_execute, dsn, *statements)
            while log.bounds(channel).last_seq < before + rows:  # noqa: ASYNC110 (polling a counter)
                await asyncio.sleep(0.005)
            results[label] = rows / (time.perf_counter() - started)
    finally:
        await source.stop()
        await log.close()
    return results


def run(dsn: str, low_seconds: float = 20, high_seconds: float = 10) -> dict[str, Any]:
    _execute(
        dsn,
        "CREATE TABLE IF NOT EXISTS bench_latency "
        "(id bigserial PRIMARY KEY, organization_id text, sent_ns bigint)",
        "CREATE TABLE IF NOT EXISTS bench_rows "
        "(id bigserial PRIMARY KEY, organization_id text, body text)",
        # Insert-only, but the source refuses tables whose deletes it could not route.
        "ALTER TABLE bench_latency REPLICA IDENTITY FULL",
        "ALTER TABLE bench_rows REPLICA IDENTITY FULL",
    )
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _server(dsn, "bench_latency_slot", os.path.join(tmp, "server")) as port:
            for rate, seconds in ((1.0, low_seconds), (1000.0, high_seconds)):
                result = asyncio.run(latency(dsn, port, rate, seconds))
                report[f"latency at {rate:g} commits/s"] = result
        report["rows/s"] = asyncio.run(throughput(dsn, "bench_rows_slot", os.path.join(tmp, "t")))
    for slot in ("bench_latency_slot", "bench_rows_slot"):
        with contextlib.suppress(psycopg2.Error):
            _execute(dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.postgres_source", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dsn", help="PostgreSQL with wal_level=logical (default: throwaway)")
    parser.add_argument("--low-seconds", type=float, default=20)
    parser.add_argument("--high-seconds", type=float, default=10)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            sys.path.insert(0, os.getcwd())
            from tests.pg_cluster import pg_cluster  # a checkout's test helper

            dsn = stack.enter_context(pg_cluster()).dsn()
        report = run(dsn, args.low_seconds, args.high_seconds)
    for key, value in report.items():
        if isinstance(value, Latency):
            print(
                f"{key}: p50 {value.p50_ms:.2f} ms, p99 {value.p99_ms:.2f} ms, "
                f"max {value.max_ms:.2f} ms ({value.samples} commits)"
            )
        else:
            for label, rate in value.items():
                print(f"WAL → log, {label}: {rate:,.0f} rows/s")


if __name__ == "__main__":
    main()
