"""Check a spool file and salvage a damaged one: every readable batch goes into a fresh spool.

Reading is row by row, so one damaged page costs only the batches on it: the table is scanned
in id order, and where the scan breaks, ids are looked up one by one until one reads again,
then the scan goes on from there. Spool ids are contiguous (the forwarder deletes only from the
front), so the ids skipped where the scan broke, up to the next readable one (or to the last id
the spool gave, kept in sqlite_sequence), are the lost batches. A file whose 100-byte header was destroyed ("file is not a database") is read
through a copy with a header rebuilt for a spool; the original is left as it was.

Synchronous (sqlite3): called in a thread at the spool's open, or by the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import SpoolError
from storage.files import private_database
from storage.spool import codec
from storage.spool.sqlitefile import SpoolLock, aside, move_with_companions, schema, stamp, sync_dir

log = logging.getLogger(__name__)

#: id, body, items, size, created
Row = tuple[int, bytes, int, int, float]

_COLUMNS = "id, CAST(body AS BLOB), items, size, created"
_MAGIC = b"SQLite format 3\x00"
#: Page sizes tried when rebuilding a header, the spool's own (SQLite's default) first.
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
#: Ids probed past a break when the last id is unknown.
_PROBE_UNBOUNDED = 100_000
_INSERT_CHUNK = 1000


@dataclass(slots=True)
class Tally:
    """What reading a spool file found."""

    readable: int = 0  #: batches read
    items: int = 0  #: items in the batches that decode
    undecodable: list[int] = field(default_factory=list)  #: ids of batches read that do not decode
    lost: int = 0  #: ids in the spool's range that could not be read
    lost_ranges: list[tuple[int, int]] = field(default_factory=list)
    #: False when the first id was unreadable: `lost` then counts from the first id SQLite errs on,
    #: which may include batches deleted long ago.
    lost_exact: bool = True
    first_id: int | None = None
    last_id: int | None = None
    oldest: float | None = None  #: created (epoch seconds) of the first batch read

    def lost_text(self) -> str:
        """E.g. "24 batches (ids 985..1008)"."""
        if not self.lost:
            return "0 batches"
        ranges = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in self.lost_ranges[:5])
        more = ", ..." if len(self.lost_ranges) > 5 else ""
        return f"{'' if self.lost_exact else 'up to '}{self.lost} batches (ids {ranges}{more})"


@dataclass(frozen=True, slots=True)
class SpoolCheck:
    """`check`: the state of a spool file, changing nothing."""

    path: Path
    exists: bool
    size_bytes: int
    in_use: bool  #: a gateway holds the spool's lock
    problem: str | None  #: why the file needs salvage; None if SQLite reads it whole
    header_damaged: bool
    tally: Tally

    @property
    def healthy(self) -> bool:
        return self.problem is None and not self.tally.undecodable


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """`salvage`: where the damaged file went and what the fresh spool holds."""

    path: Path
    kept_as: Path
    reason: str
    header_repaired: bool
    tally: Tally

    def summary(self) -> str:
        t = self.tally
        undecodable = (f", {len(t.undecodable)} that do not decode (they go to the dead letters)"
                       if t.undecodable else "")
        header = "; its header was rebuilt to read it" if self.header_repaired else ""
        return (f"spool {self.path} was damaged ({self.reason}): recovered {t.readable} batches "
                f"({t.items} items){undecodable}; lost {t.lost_text()}; the damaged file is kept as "
                f"{self.kept_as.name}{header}")


class RowReader:
    """Every readable row of a spool database, in id order; `tally` counts as it goes."""

    def __init__(self, conn: sqlite3.Connection, tally: Tally | None = None) -> None:
        self.conn = conn
        self.tally = tally or Tally()
        self._expected: int | None = None  # the id the next row should have (ids are contiguous)

    def _one(self, sql: str) -> int | None:
        try:
            row = self.conn.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            return None
        return int(row[0]) if row and isinstance(row[0], int) else None

    def rows(self) -> Iterator[Row]:
        try:
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError:
            return  # not even the schema can be read: nothing can
        first = self._one("SELECT min(id) FROM spool")
        bounds = [x for x in (self._one("SELECT max(id) FROM spool"),
                              self._one("SELECT seq FROM sqlite_sequence WHERE name = 'spool'")) if x is not None]
        # sqlite_sequence keeps the highest id ever given, in its own page: the last id even when
        # the table's last page is the damaged one.
        last = max(bounds) if bounds else None
        self.tally.first_id, self.tally.last_id = first, last
        self.tally.lost_exact = first is not None
        self._expected = first
        pos = 0 if first is None else first - 1
        while True:
            try:
                for raw in self.conn.execute(f"SELECT {_COLUMNS} FROM spool WHERE id > ? ORDER BY id", (pos,)):
                    row = _clean(raw)
                    pos = row[0]
                    yield self._took(row, after_break=False)
                break
            except sqlite3.DatabaseError:
                found = self._probe(pos + 1, last)
                if found is None:
                    if last is not None and self._expected is not None and self._expected <= last:
                        self._lose(self._expected, last)
                    break
                pos = found[0]
                yield self._took(found, after_break=True)

    def _probe(self, start: int, last: int | None) -> Row | None:
        """The first readable row with id >= start (point lookups: a damaged page fails only its own ids)."""
        stop = last if last is not None else start + _PROBE_UNBOUNDED
        for row_id in range(start, stop + 1):
            try:
                raw = self.conn.execute(f"SELECT {_COLUMNS} FROM spool WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.DatabaseError:
                if self._expected is None:
                    self._expected = row_id  # the first id that exists (or did): losses count from here
                continue
            if raw is not None:
                return _clean(raw)
        return None

    def _took(self, row: Row, *, after_break: bool) -> Row:
        row_id = row[0]
        # Ids missing where the scan broke are lost; holes a clean scan steps over are not (an
        # earlier salvage leaves them).
        if after_break and self._expected is not None and row_id > self._expected:
            self._lose(self._expected, row_id - 1)
        if self.tally.first_id is None:
            self.tally.first_id = row_id
        if self.tally.oldest is None:
            self.tally.oldest = row[4]
        self._expected = row_id + 1
        self.tally.readable += 1
        try:
            self.tally.items += len(codec.decode(row[1]))
        except Exception:  # whatever one row's bytes hold, it is that row's failure
            self.tally.undecodable.append(row_id)
        return row

    def _lose(self, a: int, b: int) -> None:
        self.tally.lost += b - a + 1
        self.tally.lost_ranges.append((a, b))


def _clean(raw: tuple[object, ...]) -> Row:
    """A row as the spool wrote it, whatever a damaged page made of its columns."""
    row_id, body, items, _size, created = raw
    assert isinstance(row_id, int)
    data = body if isinstance(body, bytes) else b""
    return (row_id, data, items if isinstance(items, int) and items > 0 else 1, len(data),
            float(created) if isinstance(created, int | float) else time.time())


def header_damaged(path: Path) -> bool:
    """Whether the 100-byte database header is unusable (not SQLite's magic, or an impossible page size)."""
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError:
        return False
    if len(head) < 100:
        return len(head) > 0
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    return head[:16] != _MAGIC or page_size < 512 or page_size & (page_size - 1) != 0


def _spool_header(page_size: int, wal: bool) -> bytes:
    """A database header for a spool file: UTF-8, schema format 4, no freelist (free pages are only
    unread), and a size of 0 so SQLite takes the size from the file's length."""
    return b"".join((
        _MAGIC,
        struct.pack(">H", 1 if page_size == 65536 else page_size),
        bytes((2, 2) if wal else (1, 1)),  # file format write / read versions: 2 = WAL
        bytes((0, 64, 32, 32)),  # reserved bytes per page; payload fractions (fixed by the format)
        struct.pack(">IIIIIIIIIIII", 1, 0, 0, 0, 1, 4, 0, 0, 1, 0, 0, 0),
        bytes(20),
        struct.pack(">II", 0, sqlite3.sqlite_version_info[0] * 1_000_000 + sqlite3.sqlite_version_info[1] * 1000
                    + sqlite3.sqlite_version_info[2]),
    ))


def _readable(path: Path) -> bool:
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error:
        return False
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("SELECT id FROM spool LIMIT 1").fetchall()
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def repaired_copy(path: Path, into: Path) -> Path | None:
    """A copy of `path` (and its -wal) at `into` with a spool's header in place of a destroyed one;
    None if no page size makes it readable."""
    shutil.copyfile(path, into)
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, into.with_name(into.name + "-wal"))
    for page_size in _PAGE_SIZES:
        with into.open("r+b") as f:
            f.write(_spool_header(page_size, wal.exists()))
        if _readable(into):
            return into
    return None


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _problem(path: Path) -> str | None:
    """Why SQLite cannot read `path` whole (None if it can): its open error or quick_check's findings."""
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        conn.execute("PRAGMA query_only=ON")
        found = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        conn.execute("SELECT count(*) FROM spool").fetchone()
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()
    return None if found == ["ok"] else f"failed its integrity check: {'; '.join(found[:3])}"


def check(path: Path, *, in_use: bool | None = None) -> SpoolCheck:
    """What `meter-gateway spool check` reports: changes nothing (a damaged header is read from a
    temporary copy). `in_use`: whether a gateway holds the spool, if the caller knows (it holds the
    lock itself); else the lock is tried."""
    if not path.exists():
        return SpoolCheck(path, False, 0, False, None, False, Tally())
    size = path.stat().st_size
    if in_use is None:
        in_use = SpoolLock.held_elsewhere(path)
    problem = _problem(path)
    damaged_header = problem is not None and header_damaged(path)
    with tempfile.TemporaryDirectory(prefix="spool-check-") as tmp:
        source: Path | None = path
        if damaged_header:
            source = repaired_copy(path, Path(tmp) / path.name)
        tally = Tally()
        if source is not None:
            conn = sqlite3.connect(source)
            try:
                conn.execute("PRAGMA query_only=ON")
                for _ in RowReader(conn, tally).rows():
                    pass
            finally:
                conn.close()
    return SpoolCheck(path, True, size, in_use, problem, damaged_header, tally)


def salvage(path: Path, *, reason: str, now: datetime | None = None) -> SalvageReport:
    """Copy every readable batch of the spool at `path` into a fresh spool that takes its place, and keep
    the damaged file (with its -wal and -shm) as `<name>.damaged-<UTC time>`. The caller holds the
    spool's lock. Batch ids are kept, and the fresh spool's ids go on after the damaged one's.

    Until the last rename the damaged file stays where it was: a crash during salvage leaves it to be
    salvaged again at the next start."""
    when = stamp(now or datetime.now(UTC))
    fresh = path.with_name(f"{path.name}.salvage-{when}")
    repaired = path.with_name(f"{path.name}.repaired-{when}")
    _remove(fresh)
    _remove(repaired)
    source = path
    header_repaired = False
    try:
        if header_damaged(path):
            copy = repaired_copy(path, repaired)
            if copy is not None:
                source, header_repaired = copy, True
        tally = _copy_rows(source, fresh)
        kept = aside(path, "damaged", when)
        move_with_companions(path, kept)
        fresh.replace(path)
        sync_dir(path.parent)
    except (OSError, sqlite3.Error) as exc:
        _remove(fresh)
        msg = f"spool {path}: cannot salvage: {exc}"
        raise SpoolError(msg) from exc
    finally:
        _remove(repaired)
    return SalvageReport(path, kept, reason, header_repaired, tally)


def _copy_rows(source: Path, fresh: Path) -> Tally:
    """Read what can be read of `source` into a new spool file `fresh` (rollback journal while it is
    built, so it needs no more than its own size; the gateway turns WAL on when it opens it)."""
    tally = Tally()
    private_database(fresh)
    out = sqlite3.connect(fresh, isolation_level=None)
    try:
        out.execute("PRAGMA synchronous=FULL")
        out.execute(schema())
        out.execute("BEGIN")
        try:
            src = sqlite3.connect(source)
        except sqlite3.Error:
            src = None
        if src is not None:
            try:
                reader = RowReader(src, tally)
                chunk: list[Row] = []
                for row in reader.rows():
                    chunk.append(row)
                    if len(chunk) >= _INSERT_CHUNK:
                        out.executemany("INSERT OR IGNORE INTO spool (id, body, items, size, created)"
                                        " VALUES (?, ?, ?, ?, ?)", chunk)
                        chunk.clear()
                out.executemany("INSERT OR IGNORE INTO spool (id, body, items, size, created) VALUES (?, ?, ?, ?, ?)",
                                chunk)
            finally:
                src.close()
        # New ids go on after every id the damaged spool gave: a dead letter naming "spool row N"
        # stays unambiguous.
        floor = max(tally.last_id or 0, tally.first_id or 0)
        out.execute("DELETE FROM sqlite_sequence WHERE name = 'spool'")
        out.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'spool', max(?, coalesce(max(id), 0)) FROM spool",
                    (floor,))
        out.execute("COMMIT")
    finally:
        out.close()
    return tally


__all__ = ["RowReader", "SalvageReport", "SpoolCheck", "Tally", "check", "header_damaged", "repaired_copy",
           "salvage"]
