"""The embedded store: one SQLite file in WAL mode, behind `storage.base.Store`.

One connection writes (serialised by a lock, one transaction per batch); a second one
reads, so API queries never see a half-written batch nor wait behind a long write.
Timestamps are stored as integer microseconds since the epoch (UTC), money as exact
decimal text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import aiosqlite

from gateway.errors import InvalidRequest, NotFound, SinkError, SinkUnavailable
from gateway.model import Batch, Channel, Meter, Reading, Status
from storage import trail
from storage.boundary import DEFAULT_ESTIMATE_WINDOW
from storage.files import private_database
from storage.identity import digest
from storage.migrate import load_migrations, pending
from storage.onthread import on_thread
from storage.records import EDIT, ReorderResult, RetentionResult, WriteResult
from storage.sql.accounts import SqlAccounts
from storage.sql.conn import Conn, SqliteConn
from storage.sql.dialect import SQLITE
from storage.sql.reads import SqlReads
from storage.sql.registry import SqlRegistry
from storage.sqlite import rows
from storage.sqlite.ingest import write_batch
from storage.sqlite.queries import SqliteQueries

log = logging.getLogger(__name__)

# Primary SQLite result codes that mean "not now" rather than "never": busy or locked
# by another process, I/O error, disk full, file cannot be opened, no memory.
_TRANSIENT_CODES = frozenset({5, 6, 7, 10, 13, 14, 15})

# The per-connection staging table a batch of readings is loaded into, so that the
# insert, the duplicate count and the conflict check are set operations instead of one
# statement per reading.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx INTEGER PRIMARY KEY, meter_id TEXT, channel TEXT, ts INTEGER, value REAL,
    kind TEXT, quality INTEGER, status TEXT, source TEXT, received_at INTEGER, note TEXT
)"""

def _utcnow() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def _errors(path: Path, action: str) -> Iterator[None]:
    """Translate sqlite3/aiosqlite failures into SinkUnavailable (retry later) or SinkError."""
    try:
        yield
    except sqlite3.Error as exc:
        where = f"sqlite store {path}: {action}"
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _TRANSIENT_CODES:
            msg = f"{where}: database unavailable: {exc}"
            raise SinkUnavailable(msg) from exc
        hint = " (has migrate() been run?)" if "no such table" in str(exc) else ""
        msg = f"{where}: {exc}{hint}"
        raise SinkError(msg) from exc
    except OSError as exc:
        msg = f"sqlite store {path}: {action}: {exc}"
        raise SinkError(msg) from exc
    except ValueError as exc:
        # aiosqlite raises ValueError("Connection closed") once close() has run.
        msg = f"sqlite store {path}: {action}: {exc}"
        raise SinkError(msg) from exc


#: The reader connection's page cache, KiB (a month query 10 % faster than with 2 MB).
READER_CACHE_KIB = 65_536

class SqliteStore(SqliteQueries, SqlAccounts, SqlRegistry, SqlReads):
    """`Store` on one SQLite file. Open with `await SqliteStore.open(path)`; close it after.

    Writes are serialised (one writer connection, one transaction per batch) and are
    committed before `write` returns. With synchronous=NORMAL in WAL mode a power loss can
    lose the last commits; the spool, not this store, carries the durability promise.
    """

    mode = "sqlite"
    dialect = SQLITE
    rows = rows.ROWS

    @property
    def retention_mode(self) -> str:
        """How old data goes: "delete" (the gateway's scheduled DELETE) or "off"."""
        return "off" if self.retention is None else "delete"

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection, *,
                 clock: Callable[[], datetime] = _utcnow, retention: timedelta | None = None,
                 gateway_id: str | None = None, estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW) -> None:  # fmt: skip
        """Use `SqliteStore.open`; this takes connections that are already configured."""
        self.path = path
        #: A real read this close before a period's boundary wins over a newer estimate.
        self.estimate_window = estimate_window
        #: Stamped on every reading, balance update, event and dead letter this store writes.
        self.gateway_id = gateway_id
        #: How long data is kept (None: for ever); `apply_retention` deletes what is older.
        self.retention = retention
        self._writer = writer
        self._reader = reader
        self._clock = clock
        # One writer at a time: the connection has one transaction, not one per task.
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 5.0, retention: timedelta | None = None,
                   clock: Callable[[], datetime] = _utcnow, gateway_id: str | None = None,
                   estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW) -> Self:  # fmt: skip
        """Open (creating if needed) the database file at `path`. Does not migrate.
        `gateway_id` is stamped on what the store writes (None: left empty); `estimate_window`:
        see storage.consumption (a period's boundary read)."""
        path = Path(path)
        with _errors(path, "open"):
            # 0600 before SQLite opens it: its -wal and -shm then get the same mode.
            private_database(path)
            writer = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
            try:
                await writer.execute("PRAGMA journal_mode=WAL")
                await writer.execute("PRAGMA synchronous=NORMAL")
                await writer.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
                await writer.execute(_STAGING)
                # Used by migration 0002 to key rows written before it (storage/identity.py).
                await writer.create_function("mg_digest", -1, digest, deterministic=True)
                reader = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
            except BaseException:
                await writer.close()
                raise
            try:
                await reader.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
                # The reader must never write: a guard against a query slipping in a write.
                await reader.execute("PRAGMA query_only=ON")
                # SQLite's default page cache is 2 MB: one meter's month touches ~2,900 pages
                # (readings lie in arrival order, interleaved by meter), so each query read them
                # again through the OS. Allocated as pages are read, up to this many KiB.
                await reader.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            except BaseException:
                await reader.close()
                await writer.close()
                raise
        return cls(path, writer, reader, clock=clock, retention=retention, gateway_id=gateway_id,
                   estimate_window=estimate_window)

    async def close(self) -> None:
        """Close both connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._reader.close()
        finally:
            await self._writer.close()

    # -- plumbing ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE on the writer under the write lock; COMMIT, or ROLLBACK on error."""
        async with self._write_lock:
            with _errors(self.path, action):
                # IMMEDIATE takes the write lock now, so a busy database fails here
                # (after busy_timeout) instead of half-way through the batch.
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._writer.execute("ROLLBACK")
                    raise
                try:
                    await self._writer.execute("COMMIT")
                except BaseException:
                    # A COMMIT that failed (disk full) may leave the transaction open; the next
                    # BEGIN would then fail as "within a transaction", a refusal, not a retry.
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._writer.execute("ROLLBACK")
                    raise

    @contextlib.asynccontextmanager
    async def _tx(self, action: str) -> AsyncIterator[Conn]:
        async with self._transaction(action) as db:
            yield SqliteConn(db)

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[Conn]:
        with _errors(self.path, action):
            yield SqliteConn(self._reader)

    async def _select(self, action: str, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return await self._fetch(action, sql, dict(params or {}))

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Any]:
        with _errors(self.path, action):
            return list(await self._reader.execute_fetchall(sql, params if isinstance(params, dict) else tuple(params)))

    # -- lifecycle ---------------------------------------------------------------
    async def migrate(self, *, upto: int | None = None) -> None:
        """Apply pending migrations in order, each in its own transaction. Idempotent."""
        migrations = [m for m in load_migrations("storage.sqlite") if upto is None or m.version <= upto]
        async with self._write_lock:
            with _errors(self.path, "migrate"):
                await self._writer.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
                )
        for migration in migrations:
            async with self._transaction(f"migration {migration.version:04d}_{migration.name}") as db:
                # Re-read inside the write transaction: another process may have applied
                # it since we looked.
                applied = await db.execute_fetchall("SELECT version FROM schema_migrations")
                if not pending([migration], {int(r[0]) for r in applied}):
                    continue
                for statement in _statements(migration.sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, rows.us(self._clock())),
                )

    async def ping(self) -> None:
        """Raise SinkUnavailable if the database file cannot be read now."""
        with _errors(self.path, "ping"):
            if self._closed:
                msg = f"sqlite store {self.path}: ping: store is closed"
                raise SinkUnavailable(msg)
            # Reads the schema page: "SELECT 1" would succeed without touching the file.
            await self._reader.execute_fetchall("SELECT count(*) FROM sqlite_master")

    async def reorder(self, now: datetime | None = None, *, budget: float | None = 60.0) -> ReorderResult:
        """Nothing to do: SQLite keeps no such order to restore (rows live in seq order)."""
        return ReorderResult("off")

    async def apply_retention(self, now: datetime | None = None) -> RetentionResult:
        """Delete readings, balances, events and dead letters older than the retention."""
        if self.retention is None:
            return RetentionResult("off", None)
        cutoff = rows.us(now or self._clock()) - self.retention // timedelta(microseconds=1)
        removed: dict[str, int] = {}
        meters = await self._fetch("apply retention", "SELECT DISTINCT meter_id FROM meters")
        for table in ("readings", "balances"):
            total = 0
            # Per meter: the meter-ordered indexes find the old rows without a scan (readings:
            # one range per channel), and each transaction stays short, so writers are not held
            # up for long.
            known = {m[0] for m in meters} | await self._distinct_meters(table)
            old = self._readings_before if table == "readings" else "meter_id = :m AND ts < :t"
            for meter_id in sorted(known):
                async with self._transaction("apply retention") as db:
                    cur = await db.execute(f"DELETE FROM {table} WHERE {old}", {"m": meter_id, "t": cutoff})
                    total += cur.rowcount
            removed[table] = total
        for table in ("events", "deadletters"):
            async with self._transaction("apply retention") as db:
                cur = await db.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,))
                removed[table] = cur.rowcount
        if any(removed.values()):
            log.info("sqlite store %s: retention removed %s older than %s", self.path, removed, rows.dt(cutoff))
        return RetentionResult("delete", rows.dt(cutoff), removed)

    async def _distinct_meters(self, table: str) -> set[str]:
        found = await self._fetch(
            "apply retention",
            f"WITH RECURSIVE m(meter_id) AS (SELECT min(meter_id) FROM {table} UNION ALL"
            f" SELECT (SELECT min(t.meter_id) FROM {table} AS t WHERE t.meter_id > m.meter_id)"
            " FROM m WHERE m.meter_id IS NOT NULL) SELECT meter_id FROM m WHERE meter_id IS NOT NULL",
        )
        return {r[0] for r in found}

    # -- sink --------------------------------------------------------------------
    async def write(self, batch: Batch) -> WriteResult:
        """Write the batch in one transaction; committed when this returns. Idempotent.
        The whole transaction runs on the writer's thread in one hop (storage.sqlite.ingest)."""
        if len(batch) == 0:
            return WriteResult()
        gateway_id, now = self.gateway_id, self._clock()
        async with self._write_lock:
            with _errors(self.path, "write"):
                return await on_thread(self._writer, lambda db: write_batch(db, batch, gateway_id, now))

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters by meter_id; created_at is kept on update."""
        if not meters:
            return
        now = rows.us(self._clock())
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in rows.METER_COLS.replace(" ", "").split(",") if c != "meter_id"
        )
        async with self._transaction("upsert meters") as db:
            await db.executemany(
                f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (meter_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
                [rows.meter_row(m, now) for m in meters],
            )

    async def set_status(self, meter_id: str, channel: Channel, ts: datetime, status: Status, *,
                         note: str, by: str, key_id: str | None = None) -> Reading:  # fmt: skip
        """A person's verdict on a reading: new status, new seq (the feed shows it again),
        and a line in the verification log. The status it has already changes nothing (same
        seq, no line). NotFound if there is no such reading."""
        if status is Status.ESTIMATED:
            msg = "set status: 'estimated' is not a verdict (estimates come from the estimator, with source=estimate)"
            raise InvalidRequest(msg)
        key = (meter_id, channel.value, rows.us(ts))
        async with self._transaction(f"set status of {meter_id}") as db:
            found = await db.execute_fetchall(
                f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = ? AND channel = ? AND ts = ?", key
            )
            if not found:
                raise NotFound("reading", f"{meter_id}/{channel.value}@{rows.dt(key[2]).isoformat()}")
            current = rows.reading(next(iter(found)))
            if current.status is status:  # a repeat: nothing changes, no reader is sent it again
                return current
            seq = await _next_seq(db)
            updated = await db.execute_fetchall(
                f"UPDATE readings SET status = ?, seq = ? WHERE seq = ? RETURNING {rows.READING_COLS}",
                (status.value, seq, current.seq),
            )
            await db.execute(
                "INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, note, actor,"
                " key_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, current.status.value, status.value, note, by, key_id, rows.us(self._clock())),
            )
        return rows.reading(next(iter(updated)))


    async def edit_reading(self, meter_id: str, channel: Channel, ts: datetime, value: float, *,
                           note: str, by: str, key_id: str | None = None) -> Reading:  # fmt: skip
        """A person's corrected value: see Store.edit_reading."""
        trail.check_edit(value)
        key = (meter_id, channel.value, rows.us(ts))
        async with self._transaction(f"edit a reading of {meter_id}") as db:
            found = await db.execute_fetchall(
                f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = ? AND channel = ? AND ts = ?", key
            )
            if not found:
                raise NotFound("reading", f"{meter_id}/{channel.value}@{rows.dt(key[2]).isoformat()}")
            current = rows.reading(next(iter(found)))
            if trail.unchanged(current, value):
                return current
            seq = await _next_seq(db)
            updated = await db.execute_fetchall(
                f"UPDATE readings SET value = ?, status = ?, seq = ? WHERE seq = ? RETURNING {rows.READING_COLS}",
                (value, trail.EDITED.value, seq, current.seq),
            )
            await db.execute(
                "INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, note, actor, key_id,"
                " created_at, action, previous_value, value, rule, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, current.status.value, trail.EDITED.value, note, by, key_id, rows.us(self._clock()), EDIT,
                 current.value, value, trail.edit_rule(current),
                 None if current.received_at is None else rows.us(current.received_at)),
            )
        return rows.reading(next(iter(updated)))

async def _next_seq(db: aiosqlite.Connection) -> int:
    """A new seq above every seq ever given (AUTOINCREMENT's own counter, moved on by one)."""
    found = await db.execute_fetchall(
        "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(seq), 0) FROM readings)) + 1"
        " WHERE name = 'readings' RETURNING seq"
    )
    return int(next(iter(found))[0])


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements, so they can run inside our own
    transaction (executescript() would commit first). sqlite3 decides where a statement
    ends: a ';' inside a string, a comment or a trigger's BEGIN ... END does not."""
    statements, start = [], 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : end + 1]):
            statements.append(script[start : end + 1].strip())
            start = end + 1
    rest = "\n".join(line for line in script[start:].splitlines() if not line.strip().startswith("--"))
    if rest.strip():
        msg = f"migration ends with an incomplete statement: {rest.strip()[:80]!r}"
        raise SinkError(msg)
    return statements
