"""The durable spool: accepted data waits here until the sink has committed it.

`append` returns only after the batch is committed with synchronous=FULL, so a crash
right after it loses nothing; that commit is what "accepted" means (SPEC §2). The
forwarder reads in id order and deletes only what the sink has committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import aiosqlite

from gateway.errors import SpoolError
from gateway.model import Batch, Event, EventKind, Severity
from storage.spool import codec

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    items INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
"""


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
    """

    def __init__(self, path: Path, *, max_bytes: int = 1_000_000_000, high_water: float = 0.8,
                 on_high_water: Callable[[SpoolStats], None] | None = None,
                 wall: Callable[[], float] = time.time, memory_bytes: int = 16_000_000) -> None:
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

    async def __aenter__(self) -> Spool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.executescript(_SCHEMA)
            await self._db.commit()
            async with self._db.execute("SELECT COUNT(*), COALESCE(SUM(items),0), COALESCE(SUM(size),0), MIN(created) FROM spool") as cur:
                row = await cur.fetchone()
        except Exception as exc:
            if self._db is not None:
                await self._db.close()
            msg = f"spool {self.path}: cannot open: {exc}"
            raise SpoolError(msg) from exc
        assert row is not None
        self._rows, self._items, self._bytes, self._oldest = int(row[0]), int(row[1]), int(row[2]), row[3]
        self._whole = self._rows == 0  # batches from before a restart are only in the file
        self._update_events()
        if self._rows:
            log.info("spool %s: %d batches (%d items) waiting from before the restart", self.path, self._rows, self._items)
        return self

    async def __aexit__(self, *exc: object | TracebackType | None) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            msg = "spool is not open"
            raise SpoolError(msg)
        return self._db

    def stats(self) -> SpoolStats:
        age = None if self._oldest is None else max(0.0, self._wall() - self._oldest)
        return SpoolStats(self._rows, self._items, self._bytes, self.max_bytes, age, self._held, self._waiting > 0)

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
        self._inserting += 1
        row_id = await asyncio.shield(self._insert(batch, body))
        for observer in self.on_append:
            observer(row_id, batch)
        return row_id

    async def _insert(self, batch: Batch, body: bytes) -> int:
        try:
            now = self._wall()
            try:
                cur = await self.db.execute("INSERT INTO spool (body, items, size, created) VALUES (?, ?, ?, ?)",
                                            (body, len(batch), len(body), now))
                await self.db.commit()
                row_id = int(cur.lastrowid or 0)
                await cur.close()
            except BaseException:
                # The row may be in the file (or be kept by a later commit) though we failed:
                # memory no longer holds everything, peek reads the file.
                self._drop_memory()
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

    async def peek(self, max_items: int) -> list[tuple[int, Batch]]:
        """The oldest batches, in order, up to about `max_items` items (at least one batch).
        They may be the spool's own objects: do not change them."""
        out: list[tuple[int, Batch]] = []
        total = 0
        if self._whole:
            for row_id, (batch, _) in self._memory.items():
                if (out and total + len(batch) > max_items) or len(out) >= _PEEK_ROWS:
                    break
                out.append((row_id, batch))
                total += len(batch)
            return out
        async with self.db.execute(f"SELECT id, body, items FROM spool ORDER BY id LIMIT {_PEEK_ROWS}") as cur:
            async for row_id, body, items in cur:
                if out and total + items > max_items:
                    break
                out.append((int(row_id), codec.decode(body)))
                total += int(items)
        return out

    async def delete_upto(self, last_id: int) -> None:
        """Forget every batch with id <= last_id: the sink has committed them."""
        # Memory first: whatever becomes of the DELETE, memory no longer hands these out. If it
        # fails or is cancelled (it may still run), peek reads the file, which has the truth.
        self._forget_upto(last_id)
        try:
            # Sums over the deleted range only (a primary-key range), not the whole spool: a
            # spool that grew to millions of batches during an outage drains in linear time.
            async with self.db.execute("SELECT COUNT(*), COALESCE(SUM(items),0), COALESCE(SUM(size),0) FROM spool"
                                       " WHERE id <= ?", (last_id,)) as cur:
                gone = await cur.fetchone()
            await self.db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
            await self.db.commit()
            async with self.db.execute("SELECT created FROM spool ORDER BY id LIMIT 1") as cur:
                first = await cur.fetchone()
        except BaseException:
            self._drop_memory()
            raise
        assert gone is not None
        self._rows -= int(gone[0])
        self._items -= int(gone[1])
        self._bytes -= int(gone[2])
        self._oldest = None if first is None else float(first[0])
        if first is None and not self._whole and self._inserting == 0:
            # The file is empty and no append is under way: from now on memory holds every batch.
            self._whole = True
        self._update_events()

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
