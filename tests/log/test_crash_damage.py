"""A killed server restarts under the same epoch with every acknowledged event; one whose
data dir lost acknowledged events (the -wal file deleted, the database truncated) is
refused with one line -- or, with --on-damage new-epoch, continues under a new epoch --
and never hands out a seq a second time under the old epoch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.support.servers import free_port, server_process

EVENTS = 10_000
BATCH = 1_000
PAYLOAD = "p" * 600  # enough bytes that sqlite checkpoints part of the WAL on the way


def post(base: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        base + "/events",
        data=json.dumps(items).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 201
        events: list[dict[str, Any]] = json.loads(response.read())["events"]
        return events


async def epoch_and_seqs(ws_url: str, channel: str) -> tuple[str, list[int]]:
    """The epoch of "subscribed" and of "travel_complete" (they must agree), and the
    seqs the log holds for ``channel``."""
    async with websockets.connect(
        ws_url, additional_headers={"X-Athena-Client": channel}, max_size=None
    ) as ws:
        hello = json.loads(await ws.recv())
        seqs: list[int] = []
        while True:
            await ws.send(json.dumps({"type": "travel", "since_seq": len(seqs), "limit": 50000}))
            while "status" not in (message := json.loads(await ws.recv())):
                seqs.append(message["data"]["seq"])
            assert message["status"] == "travel_complete"
            assert message["epoch"] == hello["epoch"]
            if not message["has_more"]:
                return hello["epoch"], seqs


async def fill_and_kill(data: Path, log_path: Path) -> tuple[str, list[tuple[str, int]]]:
    """Publish EVENTS acknowledged events over two channels, then two more, and SIGKILL
    the server. Returns the epoch and the (channel, seq) pairs handed out."""
    handed_out: list[tuple[str, int]] = []
    with server_process("--data-dir", str(data), log_path=log_path) as server:
        for start in range(0, EVENTS, BATCH):
            items = [
                {"organization_id": f"k{i % 2}", "payload": [i, PAYLOAD]}
                for i in range(start, start + BATCH)
            ]
            handed_out += [(e["organization_id"], e["seq"]) for e in post(server.base, items)]
        # Two more commits: should the first one fill the WAL to the checkpoint
        # threshold, the second is surely in the WAL only -- so deleting it loses it.
        for last in ("last but one", "last"):
            handed_out += [
                (e["organization_id"], e["seq"])
                for e in post(server.base, [{"organization_id": "k0", "payload": last}])
            ]
        epoch, _ = await epoch_and_seqs(server.ws, "k0")
        server.kill()
    return epoch, handed_out


def start_refused(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "athena_cdc", "serve"),
            *("--data-dir", str(data), "--port", str(free_port()), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def untouchable(data: Path) -> dict[str, bytes]:
    """The files a refused start must leave as they are."""
    return {name: (data / name).read_bytes() for name in ("events.sqlite3", "seq-highwater")}


def delete_wal(data: Path) -> None:
    (data / "events.sqlite3-wal").unlink()


def truncate_database(data: Path) -> None:
    with (data / "events.sqlite3").open("r+b") as f:
        f.truncate(0)


async def test_sigkill_keeps_the_epoch_and_every_acknowledged_event(tmp_path: Path) -> None:
    data = tmp_path / "data"
    epoch, handed_out = await fill_and_kill(data, tmp_path / "server.log")
    with server_process("--data-dir", str(data), log_path=tmp_path / "server.log") as server:
        after, seqs = await epoch_and_seqs(server.ws, "k0")
        assert after == epoch
        assert seqs == [seq for channel, seq in handed_out if channel == "k0"]
        (next_event,) = post(server.base, [{"organization_id": "k0", "payload": "next"}])
        assert next_event["seq"] == seqs[-1] + 1
        assert server.terminate() == 0


@pytest.mark.parametrize("damage", [delete_wal, truncate_database], ids=["wal", "truncated"])
async def test_lost_acknowledged_events_are_refused_or_get_a_new_epoch(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    data = tmp_path / "data"
    epoch, handed_out = await fill_and_kill(data, tmp_path / "server.log")
    damage(data)
    before = untouchable(data)

    refused = start_refused(data)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"athena-cdc: error: data dir {data}: ")
    assert "fewer than were acknowledged" in line and "--on-damage new-epoch" in line
    assert untouchable(data) == before  # so what is missing can still be put back

    with server_process(
        "--data-dir", str(data), "--on-damage", "new-epoch", log_path=tmp_path / "server.log"
    ) as server:
        new_epoch, kept = await epoch_and_seqs(server.ws, "k0")
        assert new_epoch != epoch
        # Whatever survived is served, and new seqs follow it -- under the new epoch,
        # so no (epoch, seq) pair is handed out twice.
        more = post(server.base, [{"organization_id": "k0", "payload": i} for i in range(3)])
        assert [e["seq"] for e in more] == [len(kept) + 1, len(kept) + 2, len(kept) + 3]
        assert len(kept) < sum(1 for channel, _ in handed_out if channel == "k0")
        assert server.terminate() == 0
    # The new epoch is now the log's own: a clean restart keeps it.
    with server_process("--data-dir", str(data), log_path=tmp_path / "server.log") as server:
        assert (await epoch_and_seqs(server.ws, "k0"))[0] == new_epoch


async def test_a_refused_start_changes_nothing_so_putting_the_wal_back_recovers_all(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    epoch, handed_out = await fill_and_kill(data, tmp_path / "server.log")
    aside = tmp_path / "wal-aside"
    shutil.move(data / "events.sqlite3-wal", aside)
    assert start_refused(data).returncode == 2
    shutil.move(aside, data / "events.sqlite3-wal")
    with server_process("--data-dir", str(data), log_path=tmp_path / "server.log") as server:
        after, seqs = await epoch_and_seqs(server.ws, "k0")
        assert after == epoch
        assert seqs == [seq for channel, seq in handed_out if channel == "k0"]
