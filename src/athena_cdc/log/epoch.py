"""The log's epoch, and the high-water record that lets a durable log notice damage.

Invariant 6 (docs/protocol.md): every log has an epoch, a short random string fixed
when the log is created; the server never hands out a seq it may already have handed
out under the same epoch. A client keeps (epoch, last seq) per channel and starts a
channel over when the epoch changes.

A file-based log can lose its newest transactions without noticing: a deleted
``-wal`` file, a database truncated to 0 bytes or copied back from an older backup
all open as a perfectly valid, but older, database -- whose seqs would then be handed
out a second time. So beside the database the sqlite log keeps a tiny *high-water*
file, ``seq-highwater``, that does not travel with the database file: the epoch and
the number of events ever appended under it. The database keeps its epoch in its
``meta`` table and counts the same number in the same transactions as the events (the
sum of its channels' last seqs). On open, a database that counts fewer events than the
high-water file (or has another epoch, or none while the file exists) has lost
acknowledged events, and its seqs cannot be trusted under that epoch.

Cost: the record is rewritten in place (one ``pwrite`` of 128 bytes, no fsync) after
each group commit, so it is exact after a crash of the process (the kernel keeps the
page). It is fsynced with the first commit after a second without one, and on clean
shutdown (otherwise the kernel writes it back within its usual ~30 s), so after a
crash of the *machine* it may be a little behind: damage is then detected only when
it exceeds what was appended in that last stretch. See docs/protocol.md, "Epoch and a
damaged data dir".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

HIGHWATER_FILE = "seq-highwater"
RECORD_SIZE = 128  # fixed, well inside one disk sector: an in-place rewrite is atomic
SYNC_INTERVAL_S = 1.0  # the record is fsynced at most this often while appending


def new_epoch() -> str:
    """A fresh epoch: 11 URL-safe characters (64 random bits)."""
    return secrets.token_urlsafe(8)


def boot_id() -> str | None:
    """This machine boot's id (Linux), None where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


class LogDamaged(Exception):
    """The log cannot rule out that it lost acknowledged events; the message is one
    line naming the data dir and what to do."""


class HighWaterUnreadable(Exception):
    """The high-water file exists but does not hold a valid record."""


@dataclass(frozen=True, slots=True)
class HighWater:
    """The record in ``seq-highwater``.

    ``appended`` counts every event appended under ``epoch`` (all channels); ``clean``
    is true only between a clean shutdown and the next start; ``boot`` is the boot id
    of the machine that last ran the log (tells a process crash from a machine crash).
    """

    epoch: str
    appended: int
    clean: bool
    boot: str | None

    def encode(self) -> bytes:
        body = orjson.dumps(
            {"epoch": self.epoch, "appended": self.appended, "clean": self.clean, "boot": self.boot}
        )
        record = b"%b %08x" % (body, zlib.crc32(body))
        if len(record) >= RECORD_SIZE:
            raise ValueError("high-water record too long")
        return record.ljust(RECORD_SIZE - 1) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> HighWater:
        try:
            body, crc = data.split()
            if int(crc, 16) != zlib.crc32(body):
                raise ValueError("checksum mismatch")
            obj = orjson.loads(body)
            epoch, appended, clean, boot = obj["epoch"], obj["appended"], obj["clean"], obj["boot"]
            if not (
                isinstance(epoch, str)
                and epoch
                and isinstance(appended, int)
                and appended >= 0
                and isinstance(clean, bool)
                and (boot is None or isinstance(boot, str))
            ):
                raise ValueError("bad field")
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise HighWaterUnreadable(str(exc)) from None
        return cls(epoch, appended, clean, boot)


@dataclass(frozen=True, slots=True)
class StoredLog:
    """What the database says about itself: its epoch (None when it has no ``meta``
    row: a new database, or one made by a version without epochs) and its count of
    events ever appended."""

    epoch: str | None
    appended: int


def damage(
    db: StoredLog, mark: HighWater | None, *, synchronous: str, boot: str | None
) -> str | None:
    """Why the database's seqs cannot be trusted under its epoch, or None if they can.

    ``mark`` is the high-water record (None when the file is absent). The reasons are
    sentences for the operator; see the module docstring for the reasoning.
    """
    if mark is None:
        if db.epoch is None:
            return None  # a new data dir, or one from a version without epochs
        return (
            f"the database has epoch {db.epoch} but {HIGHWATER_FILE} is missing "
            "(deleted, or the database was copied in from elsewhere)"
        )
    if db.epoch is not None and db.epoch != mark.epoch:
        return (
            f"the database has epoch {db.epoch} but {HIGHWATER_FILE} says {mark.epoch} "
            "(the database was replaced)"
        )
    if db.appended < mark.appended:
        missing = mark.appended - db.appended
        what = "is empty or was replaced" if db.epoch is None else "lost its newest transactions"
        return (
            f"the database {what}: it counts {db.appended} events appended, "
            f"{missing} fewer than were acknowledged under epoch {mark.epoch} "
            "(a deleted -wal file, a truncated file, or an older copy)"
        )
    if synchronous != "FULL" and not mark.clean and (boot is None or boot != mark.boot):
        # With synchronous=normal a commit is not fsynced: a machine crash loses the
        # newest acknowledged events, and the (equally unsynced) mark cannot tell.
        return (
            "the machine restarted after an unclean stop, and with --sqlite-synchronous "
            "normal the newest acknowledged events may be lost"
        )
    return None


class HighWaterFile:
    """``seq-highwater`` in a data dir: read once at open, then kept current."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / HIGHWATER_FILE
        self._fd: int | None = None
        self._mark: HighWater | None = None
        self._synced_at = 0.0

    def read(self) -> HighWater | None:
        """The record, None if the file does not exist; raises HighWaterUnreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return HighWater.decode(data)

    def start(self, epoch: str, appended: int) -> None:
        """Replace the file (atomically, durably) with a record marked running."""
        mark = HighWater(epoch, appended, clean=False, boot=boot_id())
        tmp = self.path.with_name(HIGHWATER_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, mark.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_RDWR)
        self._mark = mark
        self._synced_at = time.monotonic()

    @property
    def epoch(self) -> str:
        assert self._mark is not None
        return self._mark.epoch

    def committed(self, count: int) -> None:
        """``count`` more events are committed: rewrite the record, fsync at most once
        a second. Called by the writer thread after each commit, before anybody hears
        of the events."""
        if count == 0 or self._fd is None or self._mark is None:
            return
        self._mark = replace(self._mark, appended=self._mark.appended + count)
        os.pwrite(self._fd, self._mark.encode(), 0)
        now = time.monotonic()
        if now - self._synced_at >= SYNC_INTERVAL_S:
            os.fdatasync(self._fd)
            self._synced_at = now

    def close(self, *, clean: bool) -> None:
        """Write the last count, marked clean when the database closed cleanly."""
        if self._fd is None or self._mark is None:
            return
        try:
            self._mark = replace(self._mark, clean=clean)
            os.pwrite(self._fd, self._mark.encode(), 0)
            os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    # A new or renamed file survives a machine crash only once its directory is synced.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
