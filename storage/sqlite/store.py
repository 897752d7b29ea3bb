"""The embedded store: one SQLite file in WAL mode, behind `storage.base.Store`.

One connection writes (serialised by a lock, one transaction per batch); a second one
reads, so API queries never see a half-written batch nor wait behind a long write.
Timestamps are stored as integer microseconds since the epoch (UTC), money as exact
decimal text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from gateway.errors import SinkError, SinkUnavailable
from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    DeadLetter,
    Event,
    EventKind,
    Kind,
    Meter,
    MeterStatus,
    Protocol,
    Quality,
    Reading,
    Relay,
    Severity,
    Source,
    Status,
    Utility,
)
from storage.base import LastValue, WriteResult
from storage.migrate import load_migrations, pending

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ALL_CHANNELS = json.dumps([c.value for c in Channel])

# Primary SQLite result codes that mean "not now" rather than "never": busy or locked
# by another process, I/O error, disk full, file cannot be opened, no memory.
_TRANSIENT_CODES = frozenset({5, 6, 7, 10, 13, 14, 15})

_READING_COLS = "seq, meter_id, channel, ts, value, kind, quality, status, source, received_at, note"
_BALANCE_COLS = (
    "seq, meter_id, ts, balance, currency, emergency_credit, emergency_credit_in_use, debt, relay,"
    " last_topup_amount, last_topup_ts, low_credit, credit_exhausted, received_at"
)
_METER_COLS = (
    "meter_id, utility, protocol, address, model, device_number, payg, status, installed_at,"
    " consumer_number, location, tags"
)
_EVENT_COLS = "ts, meter_id, kind, severity, detail, acknowledged"
_DEADLETTER_COLS = "ts, source, origin, reason, detail, payload, meter_id"

# The per-connection staging table a batch of readings is loaded into, so that the
# insert, the duplicate count and the conflict check are three set operations instead
# of one statement per reading.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx INTEGER PRIMARY KEY, meter_id TEXT, channel TEXT, ts INTEGER, value REAL,
    kind TEXT, quality INTEGER, status TEXT, source TEXT, received_at INTEGER, note TEXT
)"""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _us(dt: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC (the model's rule)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICROSECOND


def _opt_us(dt: datetime | None) -> int | None:
    return None if dt is None else _us(dt)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _opt_dt(us: int | None) -> datetime | None:
    return None if us is None else _dt(us)


def _opt_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _opt_dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _like(search: str) -> str:
    """A LIKE pattern matching `search` anywhere, with its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _reading_row(r: Reading) -> tuple[Any, ...]:
    return (
        r.meter_id, r.channel.value, _us(r.ts), r.value, r.kind.value, int(r.quality),
        r.status.value, r.source.value, _opt_us(r.received_at), r.note,
    )  # fmt: skip


def _reading(row: Any) -> Reading:
    return Reading(
        seq=row[0], meter_id=row[1], channel=Channel(row[2]), ts=_dt(row[3]), value=row[4],
        kind=Kind(row[5]), quality=Quality(row[6]), status=Status(row[7]), source=Source(row[8]),
        received_at=_opt_dt(row[9]), note=row[10],
    )  # fmt: skip


def _balance_row(b: BalanceUpdate) -> tuple[Any, ...]:
    return (
        b.meter_id, _us(b.ts), str(b.balance), b.currency, _opt_str(b.emergency_credit),
        int(b.emergency_credit_in_use), _opt_str(b.debt), None if b.relay is None else b.relay.value,
        _opt_str(b.last_topup_amount), _opt_us(b.last_topup_ts), int(b.low_credit),
        int(b.credit_exhausted), _opt_us(b.received_at),
    )  # fmt: skip


def _balance(row: Any) -> BalanceUpdate:
    return BalanceUpdate(
        seq=row[0], meter_id=row[1], ts=_dt(row[2]), balance=Decimal(row[3]), currency=row[4],
        emergency_credit=_opt_dec(row[5]), emergency_credit_in_use=bool(row[6]), debt=_opt_dec(row[7]),
        relay=None if row[8] is None else Relay(row[8]), last_topup_amount=_opt_dec(row[9]),
        last_topup_ts=_opt_dt(row[10]), low_credit=bool(row[11]), credit_exhausted=bool(row[12]),
        received_at=_opt_dt(row[13]),
    )  # fmt: skip


def _meter_row(m: Meter, now: int) -> tuple[Any, ...]:
    return (
        m.meter_id, m.utility.value, m.protocol.value, m.address, m.model, m.device_number,
        int(m.payg), m.status.value, _opt_us(m.installed_at), m.consumer_number, m.location,
        json.dumps(m.tags, sort_keys=True), now, now,
    )  # fmt: skip


def _meter(row: Any) -> Meter:
    return Meter(
        meter_id=row[0], utility=Utility(row[1]), protocol=Protocol(row[2]), address=row[3],
        model=row[4], device_number=row[5], payg=bool(row[6]), status=MeterStatus(row[7]),
        installed_at=_opt_dt(row[8]), consumer_number=row[9], location=row[10],
        tags=json.loads(row[11]),
    )  # fmt: skip


def _event(row: Any) -> Event:
    return Event(
        ts=_dt(row[0]), meter_id=row[1], kind=EventKind(row[2]), severity=Severity(row[3]),
        detail=row[4], acknowledged=bool(row[5]),
    )  # fmt: skip


def _deadletter(row: Any) -> DeadLetter:
    return DeadLetter(
        ts=_dt(row[0]), source=row[1], where=row[2], reason=row[3], detail=row[4], payload=row[5],
        meter_id=row[6],
    )  # fmt: skip


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


class SqliteStore:
    """`Store` on one SQLite file. Open with `await SqliteStore.open(path)`; close it after.

    Writes are serialised (one writer connection, one transaction per batch) and are
    committed before `write` returns. With synchronous=NORMAL in WAL mode a power loss can
    lose the last commits; the spool, not this store, carries the durability promise.
    """

    mode = "sqlite"

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:  # fmt: skip
        """Use `SqliteStore.open`; this takes connections that are already configured."""
        self.path = path
        self._writer = writer
        self._reader = reader
        self._clock = clock
        # One writer at a time: the connection has one transaction, not one per task.
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 5.0,
                   clock: Callable[[], datetime] = _utcnow) -> Self:  # fmt: skip
        """Open (creating if needed) the database file at `path`. Does not migrate."""
        path = Path(path)
        with _errors(path, "open"):
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
            try:
                await writer.execute("PRAGMA journal_mode=WAL")
                await writer.execute("PRAGMA synchronous=NORMAL")
                await writer.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
                await writer.execute(_STAGING)
                reader = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
            except BaseException:
                await writer.close()
                raise
            try:
                await reader.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
                # The reader must never write: a guard against a query slipping in a write.
                await reader.execute("PRAGMA query_only=ON")
            except BaseException:
                await reader.close()
                await writer.close()
                raise
        return cls(path, writer, reader, clock=clock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

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
                await self._writer.execute("COMMIT")

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with _errors(self.path, action):
            return list(await self._reader.execute_fetchall(sql, tuple(params)))

    # -- lifecycle ---------------------------------------------------------------
    async def migrate(self) -> None:
        """Apply pending migrations in order, each in its own transaction. Idempotent."""
        migrations = load_migrations("storage.sqlite")
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
                rows = await db.execute_fetchall("SELECT version FROM schema_migrations")
                if not pending([migration], {int(r[0]) for r in rows}):
                    continue
                for statement in _statements(migration.sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _us(self._clock())),
                )

    async def ping(self) -> None:
        """Raise SinkUnavailable if the database file cannot be read now."""
        with _errors(self.path, "ping"):
            if self._closed:
                msg = f"sqlite store {self.path}: ping: store is closed"
                raise SinkUnavailable(msg)
            # Reads the schema page: "SELECT 1" would succeed without touching the file.
            await self._reader.execute_fetchall("SELECT count(*) FROM sqlite_master")

    # -- sink --------------------------------------------------------------------
    async def write(self, batch: Batch) -> WriteResult:
        """Write the batch in one transaction; committed when this returns. Idempotent."""
        result = WriteResult()
        if len(batch) == 0:
            return result
        async with self._transaction("write") as db:
            if batch.readings:
                await self._write_readings(db, batch.readings, result)
            if batch.balances:
                cur = await db.executemany(
                    f"INSERT INTO balances ({_BALANCE_COLS.removeprefix('seq, ')})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (meter_id, ts) DO NOTHING",
                    [_balance_row(b) for b in batch.balances],
                )
                result.balances_inserted = cur.rowcount
            if batch.events:
                await db.executemany(
                    f"INSERT INTO events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                    [(_us(e.ts), e.meter_id, e.kind.value, e.severity.value, e.detail,
                      int(e.acknowledged)) for e in batch.events],
                )  # fmt: skip
                result.events_inserted = len(batch.events)
            if batch.deadletters:
                await db.executemany(
                    f"INSERT INTO deadletters ({_DEADLETTER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(_us(d.ts), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id)
                     for d in batch.deadletters],
                )  # fmt: skip
                result.deadletters_inserted = len(batch.deadletters)
        return result

    async def _write_readings(self, db: aiosqlite.Connection, readings: list[Reading],
                              result: WriteResult) -> None:  # fmt: skip
        cols = _READING_COLS.removeprefix("seq, ")
        await db.execute("DELETE FROM temp.staging_readings")
        await db.executemany(
            f"INSERT INTO temp.staging_readings (idx, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(i, *_reading_row(r)) for i, r in enumerate(readings)],
        )
        # ORDER BY idx: seq follows the batch order. WHERE true: SQLite's documented way
        # to keep "ON CONFLICT" from being parsed as a join constraint.
        cur = await db.execute(
            f"INSERT INTO readings ({cols}) SELECT {cols} FROM temp.staging_readings"
            " WHERE true ORDER BY idx ON CONFLICT (meter_id, channel, ts) DO NOTHING"
        )
        result.readings_inserted = cur.rowcount
        # Every staged row now has a stored row with its key; those whose stored value
        # differs lost to an earlier value (stored before, or earlier in this batch).
        rows = await db.execute_fetchall(
            "SELECT s.idx FROM temp.staging_readings AS s JOIN readings AS r"
            " ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts"
            " WHERE r.value IS NOT s.value ORDER BY s.idx"
        )
        result.conflicts = [readings[int(row[0])] for row in rows]
        result.readings_duplicate = len(readings) - result.readings_inserted - len(result.conflicts)
        await db.execute("DELETE FROM temp.staging_readings")

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters by meter_id; created_at is kept on update."""
        if not meters:
            return
        now = _us(self._clock())
        updates = ", ".join(f"{c} = excluded.{c}" for c in _METER_COLS.replace(" ", "").split(",") if c != "meter_id")
        async with self._transaction("upsert meters") as db:
            await db.executemany(
                f"INSERT INTO meters ({_METER_COLS}, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (meter_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
                [_meter_row(m, now) for m in meters],
            )

    # -- reader ------------------------------------------------------------------
    async def list_meters(self, *, search: str | None = None, limit: int = 100,
                          after: str | None = None) -> list[Meter]:  # fmt: skip
        """Meters by meter_id after `after`; `search` is a case-insensitive substring of the
        meter number, device number or consumer number (ASCII case folding)."""
        where, params = ["1"], []
        if after is not None:
            where.append("meter_id > ?")
            params.append(after)
        if search:
            where.append(
                "(meter_id LIKE ? ESCAPE '\\' OR device_number LIKE ? ESCAPE '\\'"
                " OR consumer_number LIKE ? ESCAPE '\\')"
            )
            params += [_like(search)] * 3
        rows = await self._fetch(
            "list meters",
            f"SELECT {_METER_COLS} FROM meters WHERE {' AND '.join(where)} ORDER BY meter_id LIMIT ?",
            [*params, limit],
        )
        return [_meter(r) for r in rows]

    async def get_meter(self, meter_id: str) -> Meter | None:
        """The meter with this meter_id, or None."""
        rows = await self._fetch(
            f"get meter {meter_id}", f"SELECT {_METER_COLS} FROM meters WHERE meter_id = ?", [meter_id]
        )
        return _meter(rows[0]) if rows else None

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel, ordered by channel: one index probe per
        canonical channel, never a scan of the meter's history."""
        rows = await self._fetch(
            f"latest readings of {meter_id}",
            f"SELECT {_READING_COLS} FROM readings WHERE seq IN ("
            " SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = ? AND r.channel = c.value"
            "         ORDER BY r.ts DESC LIMIT 1)"
            " FROM json_each(?) AS c) ORDER BY channel",
            [meter_id, _ALL_CHANNELS],
        )
        return [_reading(r) for r in rows]

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None) -> list[Reading]:  # fmt: skip
        """Readings with start <= ts < end ordered by (ts, channel), keyset-paginated."""
        where = ["meter_id = ?", "ts >= ?", "ts < ?"]
        params: list[Any] = [meter_id, _us(start), _us(end)]
        if channel is not None:
            where.append("channel = ?")
            params.append(channel.value)
        if after is not None:
            where.append("(ts, channel) > (?, ?)")
            params += [_us(after[0]), str(after[1])]
        rows = await self._fetch(
            f"readings of {meter_id}",
            f"SELECT {_READING_COLS} FROM readings WHERE {' AND '.join(where)} ORDER BY ts, channel LIMIT ?",
            [*params, limit],
        )
        return [_reading(r) for r in rows]

    async def last_cumulative(self) -> list[LastValue]:
        """The latest reading of every (meter, channel) whose latest reading is cumulative.

        Walks the distinct meters with index seeks (a loose index scan) and probes each
        channel's newest row, so the cost grows with meters, not with history.
        """
        rows = await self._fetch(
            "last cumulative values",
            "WITH RECURSIVE m(meter_id) AS ("
            " SELECT min(meter_id) FROM readings"
            " UNION ALL"
            " SELECT (SELECT min(r.meter_id) FROM readings AS r WHERE r.meter_id > m.meter_id)"
            " FROM m WHERE m.meter_id IS NOT NULL)"
            " SELECT meter_id, channel, ts, value FROM readings WHERE seq IN ("
            "  SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = m.meter_id"
            "          AND r.channel = c.value ORDER BY r.ts DESC LIMIT 1)"
            "  FROM m, json_each(?) AS c WHERE m.meter_id IS NOT NULL)"
            " AND kind = ? ORDER BY meter_id, channel",
            [_ALL_CHANNELS, Kind.CUMULATIVE.value],
        )
        return [LastValue(r[0], Channel(r[1]), _dt(r[2]), r[3]) for r in rows]

    async def latest_balance(self, meter_id: str) -> BalanceUpdate | None:
        """The newest balance update of the meter (by ts), or None."""
        rows = await self._fetch(
            f"latest balance of {meter_id}",
            f"SELECT {_BALANCE_COLS} FROM balances WHERE meter_id = ? ORDER BY ts DESC LIMIT 1",
            [meter_id],
        )
        return _balance(rows[0]) if rows else None

    async def balances(self, meter_id: str, *, start: datetime, end: datetime,
                       limit: int = 1000) -> list[BalanceUpdate]:  # fmt: skip
        """Balance updates with start <= ts < end, ordered by ts."""
        rows = await self._fetch(
            f"balances of {meter_id}",
            f"SELECT {_BALANCE_COLS} FROM balances WHERE meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            [meter_id, _us(start), _us(end), limit],
        )
        return [_balance(r) for r in rows]

    async def events(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                     limit: int = 100) -> list[Event]:  # fmt: skip
        """Events, most recent first."""
        where, params = _filters(meter_id=meter_id, kind=None if kind is None else kind.value)
        rows = await self._fetch(
            "events",
            f"SELECT {_EVENT_COLS} FROM events WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?",
            [*params, limit],
        )
        return [_event(r) for r in rows]

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> list[DeadLetter]:  # fmt: skip
        """Dead letters, most recent first."""
        where, params = _filters(meter_id=meter_id, reason=reason)
        rows = await self._fetch(
            "dead letters",
            f"SELECT {_DEADLETTER_COLS} FROM deadletters WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?",
            [*params, limit],
        )
        return [_deadletter(r) for r in rows]


def _filters(**equal: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause of `column = ?` for every filter that is set (names are ours)."""
    used = {col: value for col, value in equal.items() if value is not None}
    clause = " AND ".join(f"{col} = ?" for col in used) or "1"
    return clause, list(used.values())


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
