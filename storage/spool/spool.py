"""The durable spool: accepted data waits here until the sink has committed it.

`append` returns only after the batch is committed with synchronous=FULL, so a crash
right after it loses nothing; that commit is what "accepted" means (SPEC §2). The
forwarder reads in id order and deletes only what the sink has committed.

What the spool does when its file fails it (SPEC §7):
- it cannot write (disk full, I/O error, read-only): `append` waits and tries again with back-off
  (nothing is committed, so nothing is acknowledged); `stats().blocked` says why, and SPOOL_BLOCKED /
  SPOOL_RESUMED events are kept in memory until the spool can store them;
- a row does not decode: `peek` hands out a dead letter with the row's id and bytes in its place;
- the file is damaged at open (SQLite cannot read it, or PRAGMA quick_check fails): it is moved
  aside and every readable batch copied into a fresh spool (`storage.spool.salvage`);
- the file is removed or replaced while open (`check_file`, run periodically by `watch`): what
  the open file still holds is copied into a fresh spool at the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import aiosqlite

from gateway.backoff import Backoff
from gateway.errors import SpoolDamaged, SpoolError, SpoolUnwritable
from gateway.model import Batch, Event, EventKind, Severity
from storage.files import private_database
from storage.onthread import on_thread
from storage.spool import codec, sqlitefile
from storage.spool.salvage import salvage
from storage.spool.sqlitefile import SpoolLock, clear_path, copy_into, schema, spool_error, stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    rows: int
    items: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    #: Appends that had to wait for room (back-pressure), since the spool was opened.
    held: int = 0
    #: True while a producer is waiting for room now.
    full: bool = False
    #: Why the spool cannot write now ("disk full", "I/O error", ...); None while it can.
    blocked: str | None = None
    #: When it stopped being able to write (epoch seconds).
    blocked_since: float | None = None
    #: Writes that failed and were retried, since the spool was opened.
    write_failures: int = 0

    @property
    def fill(self) -> float:
        return self.bytes / self.max_bytes


#: Batches one peek returns at most.
_PEEK_ROWS = 1000


class Spool:
    """Append-only durable queue in a SQLite file (WAL). Use `async with Spool(path)`.

    Crossing `high_water` (a share of `max_bytes`) appends a SPOOL_HIGH event to the spool
    itself, so it reaches the store like any data (and calls `on_high_water`, for logs and
    metrics). At `max_bytes`, `append` waits until the forwarder has made room.
    `on_append` observers see every committed batch (diagnostics, tests).

    While every spooled batch was appended by this process and they fit in `memory_bytes`
    (encoded), `peek` hands out those batches as appended instead of reading and decoding
    them back: the forwarder's usual case, when the store keeps up. After a restart, or once
    more than that is waiting, it reads them from the file until the spool is empty again.

    `on_event` sees the spool's own events (blocked, resumed, salvaged, replaced) when they happen,
    before they are stored (a blocked spool stores them only once it can write again).
    While open, the spool holds `<path>.lock` (see SpoolLock): one process at a time.
    """

    def __init__(self, path: Path, *, max_bytes: int = 1_000_000_000, high_water: float = 0.8,
                 on_high_water: Callable[[SpoolStats], None] | None = None,
                 wall: Callable[[], float] = time.time, memory_bytes: int = 16_000_000,
                 on_event: Callable[[Event], None] | None = None,
                 retry: Callable[[], Backoff] = lambda: Backoff(0.1, 5.0)) -> None:
        self.path = path
        self.memory_bytes = memory_bytes
        self.max_bytes = max_bytes
        self.high_water = high_water
        self._on_high_water = on_high_water
        self._wall = wall
        self.on_append: list[Callable[[int, Batch], None]] = []
        self._held = 0
        self._waiting = 0
        self._db: aiosqlite.Connection | None = None
        self._bytes = 0
        self._items = 0
        self._rows = 0
        self._oldest: float | None = None
        self._room = asyncio.Event()
        self._data = asyncio.Event()
        self._above_high = False
        #: Committed batches by id (with their encoded size), in id order, while `_whole`:
        #: then they are every row of the file. Not whole: peek reads the file.
        self._memory: dict[int, tuple[Batch, int]] = {}
        self._memory_size = 0
        self._whole = False
        #: Appends whose INSERT is under way (see delete_upto).
        self._inserting = 0
        #: Held by every statement on the file, and while a removed file is replaced (check_file).
        self._file = asyncio.Lock()
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._lock = SpoolLock(path)
        self._on_event = on_event
        self._retry = retry
        self._blocked: _Blocked | None = None
        self._write_failures = 0
        #: The spool's own events not yet committed (kept in memory while it cannot write).
        self._pending: list[Event] = []
        self._undecodable_logged: set[int] = set()

    async def __aenter__(self) -> Spool:
        """Open (creating if needed) the spool; salvage it first if it is damaged."""
        self._lock.acquire()
        try:
            try:
                private_database(self.path)
                self._db = await self._connect(check=True)
            except SpoolDamaged as exc:
                log.error("%s: moving it aside and copying every readable batch into a fresh spool", exc)
                why = str(exc).removeprefix(f"spool {self.path}: ")
                report = await asyncio.to_thread(salvage, self.path, reason=why)
                log.error("%s", report.summary())
                self._raise(Event(datetime.fromtimestamp(self._wall(), UTC), None, EventKind.SPOOL_SALVAGED,
                                  Severity.CRITICAL if report.tally.lost else Severity.WARNING, report.summary()))
                private_database(self.path)
                self._db = await self._connect(check=True)
            except OSError as exc:
                msg = f"spool {self.path}: cannot open: {exc}"
                raise SpoolError(msg) from exc
        except BaseException:
            self._lock.release()
            raise
        self._whole = self._rows == 0  # batches from before a restart are only in the file
        self._update_events()
        if self._rows:
            log.info("spool %s: %d batches (%d items) waiting from before the restart", self.path, self._rows, self._items)
        await self.flush_events()
        return self

    async def _connect(self, *, check: bool) -> aiosqlite.Connection:
        """A connection on the file at `path` (WAL, synchronous=FULL), its rows counted; with `check`,
        SpoolDamaged if SQLite cannot read it whole (PRAGMA quick_check reads every page once)."""
        db: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(self.path)
            # Text as bytes: a damaged row may hold text that is not UTF-8, which sqlite3 would refuse
            # to return at all (peek then dead-letters it with its bytes).
            db.text_factory = bytes
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute(schema())
            await db.commit()
            if check:
                found = [bytes(r[0]).decode(errors="replace") for r in await db.execute_fetchall("PRAGMA quick_check")]
                if found != ["ok"]:
                    msg = f"spool {self.path}: failed its integrity check: {'; '.join(found[:3])}"
                    raise SpoolDamaged(msg)
            async with db.execute("SELECT COUNT(*), COALESCE(SUM(items),0), COALESCE(SUM(size),0), MIN(created)"
                                  " FROM spool") as cur:
                row = await cur.fetchone()
            st = os.stat(self.path)
        except BaseException as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.close()
            if isinstance(exc, sqlite3.Error):
                raise spool_error(self.path, "cannot open", exc) from exc
            raise
        assert row is not None
        self._rows, self._items, self._bytes, self._oldest = int(row[0]), int(row[1]), int(row[2]), row[3]
        self._file_id = (st.st_dev, st.st_ino)
        return db

    async def __aexit__(self, *exc: object | TracebackType | None) -> None:
        # Under the file lock: a replacement of the file under way (check_file) finishes first.
        async with self._file:
            if self._db is not None:
                await self._db.close()
                self._db = None
        self._lock.release()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            msg = "spool is not open"
            raise SpoolError(msg)
        return self._db

    def stats(self) -> SpoolStats:
        age = None if self._oldest is None else max(0.0, self._wall() - self._oldest)
        blocked = self._blocked
        return SpoolStats(self._rows, self._items, self._bytes, self.max_bytes, age, self._held, self._waiting > 0,
                          None if blocked is None else blocked.why, None if blocked is None else blocked.since,
                          self._write_failures)

    async def append(self, batch: Batch) -> int:
        """Commit `batch` durably and return its id. Waits while the spool is full
        (back-pressure), never drops."""
        body = codec.encode(batch)
        if self._bytes + len(body) > self.max_bytes and self._rows > 0:
            self._held += 1
            self._waiting += 1
            log.warning("spool %s full (%d of %d bytes): holding producers", self.path, self._bytes, self.max_bytes)
            try:
                while self._bytes + len(body) > self.max_bytes and self._rows > 0:
                    self._room.clear()
                    await self._room.wait()
            finally:
                self._waiting -= 1
        if not self._above_high and self._bytes + len(body) >= self.high_water * self.max_bytes:
            # This append crosses the warning level: the event travels with it, in the same
            # commit, so it can be neither lost nor duplicated.
            fill = (self._bytes + len(body)) / self.max_bytes
            warning = Event(ts=datetime.fromtimestamp(self._wall(), UTC), meter_id=None, kind=EventKind.SPOOL_HIGH,
                            severity=Severity.CRITICAL,
                            detail=f"spool {self.path.name} at {fill:.0%} of {self.max_bytes} bytes "
                                   f"({self._items + len(batch)} items waiting for the store)")  # fmt: skip
            batch = Batch(batch.readings, batch.balances, [*batch.events, warning], batch.deadletters)
            body = codec.encode(batch)
        # Shielded: aiosqlite runs a queued INSERT even if this task is cancelled, so the rest
        # (counting it, keeping it in memory) must run too, or memory would miss a row of the file.
        retry: Backoff | None = None
        while True:
            self._inserting += 1
            try:
                row_id = await asyncio.shield(self._insert(batch, body))
                break
            except SpoolUnwritable as exc:
                # Nothing was committed: the caller has nothing to acknowledge yet, and waits here
                # (its queue fills: pollers skip slots, MQTT messages stay at the broker).
                self._unwritable(exc)
                retry = retry or self._retry()
                await asyncio.sleep(retry.next())
        if self._blocked is not None or self._pending:
            self._writable()
            await self.flush_events()
        for observer in self.on_append:
            observer(row_id, batch)
        return row_id

    async def _insert(self, batch: Batch, body: bytes) -> int:
        try:
            async with self._file:
                db = self.db
                now = self._wall()
                try:
                    row_id = await on_thread(db, lambda conn: sqlitefile.insert_row(conn, body, len(batch), now))
                except BaseException as exc:
                    # The row may be in the file (or be kept by a later commit) though we failed:
                    # memory no longer holds everything, peek reads the file.
                    self._drop_memory()
                    if isinstance(exc, sqlite3.Error):
                        # SQLite may keep the transaction open after a failed statement or COMMIT;
                        # the retry must not commit this row along with its own.
                        await _rollback(db)
                        raise spool_error(self.path, "append", exc) from exc
                    raise
                self._rows += 1
                self._items += len(batch)
                self._bytes += len(body)
                self._remember(row_id, batch, len(body))
                if self._oldest is None:
                    self._oldest = now
                self._update_events()
                return row_id
        finally:
            self._inserting -= 1

    async def flush_events(self) -> None:
        """Commit the spool's own events kept in memory (if it can write now; else they wait)."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        batch = Batch(events=events)
        self._inserting += 1
        try:
            await asyncio.shield(self._insert(batch, codec.encode(batch)))
        except SpoolUnwritable as exc:
            self._pending[:0] = events
            self._unwritable(exc)
            return
        except BaseException:
            # Cancelled: the shielded insert may still commit them; then they are stored twice,
            # which the store's idempotent event keys make once.
            self._pending[:0] = events
            raise
        if self._blocked is not None:  # this write was the one that found the disk writable again
            self._writable()
            await self.flush_events()

    async def peek(self, max_items: int, *, after: int = 0) -> list[tuple[int, Batch]]:
        """The oldest batches with an id above `after`, in order, up to about `max_items` items (at least one batch).
        They may be the spool's own objects: do not change them. A row that does not decode comes
        as a batch holding one dead letter (reason `spool_undecodable`) with the row's id and bytes."""
        out: list[tuple[int, Batch]] = []
        total = 0
        if self._whole:
            for row_id, (batch, _) in self._memory.items():
                if row_id <= after:
                    continue
                if (out and total + len(batch) > max_items) or len(out) >= _PEEK_ROWS:
                    break
                out.append((row_id, batch))
                total += len(batch)
            return out
        async with self._file:
            async with self.db.execute(f"SELECT id, body, items, created FROM spool WHERE id > ? ORDER BY id"
                                       f" LIMIT {_PEEK_ROWS}", (after,)) as cur:
                async for row_id, body, items, created in cur:
                    n = items if type(items) is int else 1
                    if out and total + n > max_items:
                        break
                    try:
                        batch = codec.decode(body)
                    except Exception as exc:  # whatever one row's bytes hold, it is that row's failure
                        batch = codec.undecodable(int(row_id), body, created, exc)
                        if row_id not in self._undecodable_logged:
                            self._undecodable_logged.add(row_id)
                            log.error("spool %s: %s; sent to the dead letters", self.path,
                                      batch.deadletters[0].detail)
                    out.append((int(row_id), batch))
                    total += n
        return out

    async def delete_upto(self, last_id: int) -> None:
        """Forget every batch with id <= last_id: the sink has committed them. SpoolUnwritable if the
        file cannot be written now (a delete writes to the WAL): call again later."""
        # Memory first: whatever becomes of the DELETE, memory no longer hands these out. If it
        # fails, peek reads the file, which has the truth. Shielded: once its hop is queued it commits
        # even if the caller is cancelled (the forwarder's shutdown), and the counts must follow.
        self._forget_upto(last_id)
        await asyncio.shield(self._delete(last_id))

    async def _delete(self, last_id: int) -> None:
        try:
            async with self._file:
                db = self.db
                try:
                    gone, first = await on_thread(db, lambda conn: sqlitefile.delete_rows(conn, last_id))
                except sqlite3.Error as exc:
                    await _rollback(db)
                    raise spool_error(self.path, "delete", exc) from exc
        except BaseException as exc:
            self._drop_memory()
            if isinstance(exc, SpoolUnwritable):
                self._unwritable(exc)
            raise
        self._rows -= int(gone[0])
        self._items -= int(gone[1])
        self._bytes -= int(gone[2])
        self._oldest = None if first is None else float(first[0])
        if first is None and not self._whole and self._inserting == 0:
            # The file is empty and no append is under way: from now on memory holds every batch.
            self._whole = True
        if self._undecodable_logged:
            self._undecodable_logged = {i for i in self._undecodable_logged if i > last_id}
        self._update_events()
        if self._blocked is not None:
            self._writable()
            await self.flush_events()

    # -- when the file fails ----------------------------------------------------------
    def _raise(self, event: Event) -> None:
        """Keep one of the spool's own events until it is committed, and tell `on_event` now."""
        self._pending.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _unwritable(self, exc: SpoolUnwritable) -> None:
        self._write_failures += 1
        if self._blocked is not None:
            self._blocked.error = str(exc)
            return
        since = self._wall()
        detail = (f"spool {self.path} cannot write: {exc.why} ({exc.__cause__ or exc}); intake paused: nothing "
                  "is acknowledged that is not stored, polls wait; retrying")
        log.error("%s", detail)
        event = Event(datetime.fromtimestamp(since, UTC), None, EventKind.SPOOL_BLOCKED, Severity.CRITICAL, detail)
        self._blocked = _Blocked(exc.why, str(exc), since, event)
        if self._on_event is not None:
            self._on_event(event)

    def _writable(self) -> None:
        blocked, self._blocked = self._blocked, None
        if blocked is None:
            return
        now = self._wall()
        detail = (f"spool {self.path.name} writes again after {now - blocked.since:.0f} s ({blocked.why}): "
                  "intake resumed")
        log.warning("%s", detail)
        # The blocked event is stored now, with the time it began.
        self._pending.append(blocked.event)
        self._raise(Event(datetime.fromtimestamp(now, UTC), None, EventKind.SPOOL_RESUMED, Severity.INFO, detail))

    async def watch(self, every: float) -> None:
        """Until cancelled, every `every` seconds: notice the file removed or replaced (`check_file`),
        and store the spool's own events that wait in memory."""
        while True:
            await asyncio.sleep(every)
            await self.check_file()
            # Also while blocked: with no intake, this is the write that finds the disk writable again.
            await self.flush_events()

    async def check_file(self) -> bool:
        """If the file at `path` is no longer the one open (removed, or another put in its place),
        copy every batch the open file holds into a fresh spool at `path`, and raise SPOOL_REPLACED.
        True if it did. A file that took the spool's place is kept as `<name>.replaced-<time>`.
        Costs one stat() when nothing happened."""
        if self._db is None or self._file_id is None:
            return False
        if self._on_disk() == self._file_id:
            return False
        # Shielded: half a replacement would lose the open file; __aexit__ waits for it (file lock).
        return await asyncio.shield(self._replace_file())

    def _on_disk(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    async def _replace_file(self) -> bool:
        async with self._file:
            old = self._db
            found = self._on_disk()
            if old is None or found == self._file_id:
                return False
            how = "removed" if found is None else "replaced by another file"
            log.error("spool %s was %s while the gateway ran; %d batches (%d items) are still in the open file: "
                      "copying them into a fresh spool", self.path, how, self._rows, self._items)
            try:
                kept = clear_path(self.path, occupied=found is not None,
                                  when=stamp(datetime.fromtimestamp(self._wall(), UTC)))
                private_database(self.path)
                await copy_into(old, self.path)
                new = await self._connect(check=False)
            except (SpoolError, OSError) as exc:
                log.error("spool %s: the fresh spool could not be made (tried again in a while): %s", self.path, exc)
                return False
            self._db = new
            with contextlib.suppress(SpoolError, OSError):
                self._lock.renew()
            # The old file's last connection: it sees that its file moved, so it leaves the new
            # -wal and -shm alone.
            with contextlib.suppress(sqlite3.Error, ValueError):
                await old.close()
        detail = (f"spool file {self.path} was {how} while the gateway ran: the {self._rows} batches "
                  f"({self._items} items) waiting in the open file were copied into a fresh spool")
        if kept is not None:
            detail += f"; the file that took its place is kept as {kept.name}"
        self._raise(Event(datetime.fromtimestamp(self._wall(), UTC), None, EventKind.SPOOL_REPLACED,
                          Severity.CRITICAL, detail))
        await self.flush_events()
        return True

    def _remember(self, row_id: int, batch: Batch, size: int) -> None:
        """Keep a just-committed batch for peek (in the same step as it is counted)."""
        if not self._whole:
            return
        if self._memory_size + size > self.memory_bytes:
            self._drop_memory()  # too much waiting: peek reads the file until the spool is empty
            return
        # Copies of the lists: the caller may go on using its batch.
        self._memory[row_id] = (Batch(list(batch.readings), list(batch.balances), list(batch.events),
                                      list(batch.deadletters)), size)  # fmt: skip
        self._memory_size += size

    def _forget_upto(self, last_id: int) -> None:
        while self._memory:
            first = next(iter(self._memory))
            if first > last_id:
                break
            self._memory_size -= self._memory.pop(first)[1]

    def _drop_memory(self) -> None:
        """Memory may no longer hold every batch in the file: peek reads the file until it is empty."""
        self._whole = False
        self._memory.clear()
        self._memory_size = 0

    async def wait_for_data(self) -> None:
        await self._data.wait()

    def _update_events(self) -> None:
        if self._rows:
            self._data.set()
        else:
            self._data.clear()
        if self._bytes < self.max_bytes:
            self._room.set()
        above = self._bytes >= self.high_water * self.max_bytes
        if above and not self._above_high:
            log.warning("spool %s above %d %% of its limit", self.path, int(self.high_water * 100))
            if self._on_high_water is not None:
                self._on_high_water(self.stats())
        elif self._above_high and not above:
            log.info("spool %s back below %d %% of its limit", self.path, int(self.high_water * 100))
        self._above_high = above


@dataclass(slots=True)
class _Blocked:
    why: str
    error: str
    since: float
    event: Event


async def _rollback(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.rollback()

