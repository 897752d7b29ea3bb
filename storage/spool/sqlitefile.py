"""The spool's SQLite file: its schema, what SQLite's errors mean for it, the lock a gateway holds on it,
and the names damaged or displaced files are kept under."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from gateway.errors import SpoolDamaged, SpoolError, SpoolUnwritable
from storage.files import COMPANIONS, PRIVATE_FILE, private_dir


def schema(prefix: str = "") -> str:
    """The spool table (in the attached database `prefix`, e.g. "fresh.", if given)."""
    return f"""
CREATE TABLE IF NOT EXISTS {prefix}spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    items INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
)"""


def insert_row(db: sqlite3.Connection, body: bytes, items: int, now: float) -> int:
    """One spooled batch, committed (on the connection's thread: one hop, see storage.onthread)."""
    cur = db.execute("INSERT INTO spool (body, items, size, created) VALUES (?, ?, ?, ?)", (body, items, len(body), now))
    db.commit()
    return int(cur.lastrowid or 0)


def delete_rows(db: sqlite3.Connection, last_id: int) -> tuple[tuple[int, int, int], tuple[float] | None]:
    """Delete batches up to `last_id`, committed: ((rows, items, bytes) deleted, (created,) of the first left)."""
    # Sums over the deleted range only (a primary-key range), not the whole spool: a spool that grew
    # to millions of batches during an outage drains in linear time.
    gone = db.execute("SELECT COUNT(*), COALESCE(SUM(items),0), COALESCE(SUM(size),0) FROM spool WHERE id <= ?",
                      (last_id,)).fetchone()
    db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
    db.commit()
    first = db.execute("SELECT created FROM spool ORDER BY id LIMIT 1").fetchone()
    return (int(gone[0]), int(gone[1]), int(gone[2])), first


#: Primary result codes that mean "cannot write now, may later" (the file itself is fine), with
#: the short reason readiness, events and metrics show.
UNWRITABLE = {
    13: "disk full",  # SQLITE_FULL
    10: "I/O error",  # SQLITE_IOERR (and its extended codes: write, fsync, shm size, ...)
    8: "read-only",  # SQLITE_READONLY: e.g. the file system was remounted read-only
    14: "cannot open a file",  # SQLITE_CANTOPEN: a -wal, -shm or temp file could not be created
    7: "out of memory",  # SQLITE_NOMEM
    5: "busy",  # SQLITE_BUSY: another process writes to the spool
    6: "locked",  # SQLITE_LOCKED
    15: "locking protocol",  # SQLITE_PROTOCOL
}
#: Primary result codes that mean the file's content is damaged: SQLITE_CORRUPT, SQLITE_NOTADB.
DAMAGED = frozenset({11, 26})


def spool_error(path: Path, action: str, exc: sqlite3.Error) -> SpoolError:
    """The typed error for a SQLite failure of the spool at `path` while doing `action`."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    why = UNWRITABLE.get(code)
    if why is not None:
        return SpoolUnwritable(why, f"spool {path}: {action}: {why} ({exc})")
    if code in DAMAGED:
        return SpoolDamaged(f"spool {path}: {action}: {exc}")
    return SpoolError(f"spool {path}: {action}: {exc}")


def stamp(now: datetime | None = None) -> str:
    """A UTC time for file names, e.g. 20260301T120000Z."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def aside(path: Path, tag: str, when: str) -> Path:
    """A free name beside `path` to keep a file under: spool.db.damaged-20260301T120000Z (-2, -3, ... if taken).
    The SQLite companions keep their suffix after it (…Z-wal), so SQLite still pairs them."""
    base = path.with_name(f"{path.name}.{tag}-{when}")
    candidate, n = base, 1
    while any(candidate.with_name(candidate.name + s).exists() for s in ("", "-wal", "-shm", "-journal")):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def move_with_companions(source: Path, target: Path) -> list[Path]:
    """Rename `source` and its -wal, -shm, -journal (those that exist) to `target` (+ the same suffixes)."""
    moved = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        src = source.with_name(source.name + suffix)
        if src.exists():
            dst = target.with_name(target.name + suffix)
            src.replace(dst)
            moved.append(dst)
    return moved


def sync_dir(path: Path) -> None:
    """Make renames in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_path(path: Path, *, occupied: bool, when: str) -> Path | None:
    """Free `path` for a fresh spool while the old file stays open: a file that took its place is kept
    aside (returned); the old file's -wal and -shm left behind are renamed, as SQLite would otherwise
    apply them to the new file."""
    kept = None
    if occupied:
        kept = aside(path, "replaced", when)
        path.replace(kept)
    leftovers = aside(path, "removed", when)
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.replace(leftovers.with_name(leftovers.name + suffix))
    return kept


async def copy_into(old: aiosqlite.Connection, path: Path) -> None:
    """Copy every row of the spool open on `old` (its file unlinked) into a new file at `path`, ids and
    the id sequence kept, so what the spool's memory and the forwarder hold still name the same batches."""
    try:
        await old.execute("ATTACH DATABASE ? AS fresh", (str(path),))
        try:
            await old.execute(schema("fresh."))
            await old.execute("INSERT INTO fresh.spool (id, body, items, size, created)"
                              " SELECT id, body, items, size, created FROM main.spool ORDER BY id")
            await old.execute("DELETE FROM fresh.sqlite_sequence WHERE name = 'spool'")
            await old.execute("INSERT INTO fresh.sqlite_sequence (name, seq) SELECT 'spool', max("
                              " coalesce((SELECT seq FROM main.sqlite_sequence WHERE name = 'spool'), 0),"
                              " coalesce((SELECT max(id) FROM main.spool), 0))")
            await old.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await old.rollback()
            raise
        finally:
            with contextlib.suppress(sqlite3.Error):
                await old.execute("DETACH DATABASE fresh")
    except sqlite3.Error as exc:
        for suffix in ("", *COMPANIONS):  # our half-made file: the next check tries again
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + suffix).unlink()
        raise spool_error(path, "copy into a fresh spool", exc) from exc


class SpoolLock:
    """An exclusive lock on `<spool>.lock` while a process has the spool open.

    A flock: the kernel drops it when the process ends, SIGKILL included, so a stale lock file
    never blocks anyone. Taken without waiting: a second gateway on the same spool, or
    `meter-gateway spool salvage` under a running gateway, fails at once with a message.
    """

    def __init__(self, spool: Path) -> None:
        self.path = spool.with_name(spool.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> SpoolLock:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = (f"spool {self.path.with_suffix('')} is in use by another process (it holds {self.path}): "
                   "a gateway is running with this spool; stop it first")
            raise SpoolError(msg) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def renew(self) -> None:
        """Take the lock again if its file was removed or replaced (a data directory wiped under us)."""
        if self._fd is None:
            return
        try:
            on_disk = os.stat(self.path)
            held = os.fstat(self._fd)
            if (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino):
                return
        except FileNotFoundError:
            pass
        old = self._fd
        self._fd = None
        try:
            self.acquire()
        except SpoolError:
            self._fd = old  # someone else holds the new lock file; keep ours
            raise
        with contextlib.suppress(OSError):
            os.close(old)

    @classmethod
    def held_elsewhere(cls, spool: Path) -> bool:
        """Whether another process holds the spool's lock now (checked without taking it for long)."""
        lock = cls(spool)
        if not lock.path.exists():
            return False
        try:
            lock.acquire()
        except SpoolError:
            return True
        lock.release()
        return False


__all__ = ["DAMAGED", "UNWRITABLE", "SpoolLock", "aside", "clear_path", "copy_into", "delete_rows", "insert_row",
           "move_with_companions", "schema", "spool_error", "stamp", "sync_dir"]
