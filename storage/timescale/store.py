"""The production store: PostgreSQL with TimescaleDB (or plain PostgreSQL), via psycopg 3.

Many gateways may write to one database: writes are idempotent on their natural keys,
`seq` comes from a database sequence, and migrations take an advisory lock. Every
psycopg failure is translated once, here: connection trouble (and a pool that cannot
hand out a connection within `timeout`) becomes SinkUnavailable, anything else SinkError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolClosed

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

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_ALL_CHANNELS = [c.value for c in Channel]
# Any constant works; it only has to be the same for every gateway sharing the database.
_MIGRATE_LOCK = 0x6D67_6D69  # "mgmi"
_MODES = {"apache": "timescaledb-apache", "timescale": "timescaledb-community"}

_READING_COLS = "seq, meter_id, channel, ts, value, kind, quality, status, source, received_at, note"
_READING_IN = _READING_COLS.removeprefix("seq, ")
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

# Each pooled connection gets its own staging table when it is opened. A batch is COPYed
# into it, then inserted and checked for conflicts with set operations: three round trips
# per batch instead of one per reading. ON COMMIT DELETE ROWS empties it after each batch.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx integer, meter_id text COLLATE "C", channel text COLLATE "C", ts timestamptz,
    value double precision, kind text, quality integer, status text, source text,
    received_at timestamptz, note text
) ON COMMIT DELETE ROWS"""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are UTC (the model's rule); results are always tz-aware UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else _utc(dt)


def _like(search: str) -> str:
    """An ILIKE pattern matching `search` anywhere, with its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _reading_row(idx: int, r: Reading) -> tuple[Any, ...]:
    return (
        idx, r.meter_id, r.channel.value, _utc(r.ts), r.value, r.kind.value, int(r.quality),
        r.status.value, r.source.value, _opt_utc(r.received_at), r.note,
    )  # fmt: skip


def _reading(row: Any) -> Reading:
    return Reading(
        seq=row[0], meter_id=row[1], channel=Channel(row[2]), ts=_utc(row[3]), value=row[4],
        kind=Kind(row[5]), quality=Quality(row[6]), status=Status(row[7]), source=Source(row[8]),
        received_at=_opt_utc(row[9]), note=row[10],
    )  # fmt: skip


def _balance_row(b: BalanceUpdate) -> tuple[Any, ...]:
    return (
        b.meter_id, _utc(b.ts), b.balance, b.currency, b.emergency_credit, b.emergency_credit_in_use,
        b.debt, None if b.relay is None else b.relay.value, b.last_topup_amount, _opt_utc(b.last_topup_ts),
        b.low_credit, b.credit_exhausted, _opt_utc(b.received_at),
    )  # fmt: skip


def _balance(row: Any) -> BalanceUpdate:
    return BalanceUpdate(
        seq=row[0], meter_id=row[1], ts=_utc(row[2]), balance=Decimal(row[3]), currency=row[4],
        emergency_credit=row[5], emergency_credit_in_use=row[6], debt=row[7],
        relay=None if row[8] is None else Relay(row[8]), last_topup_amount=row[9],
        last_topup_ts=_opt_utc(row[10]), low_credit=row[11], credit_exhausted=row[12],
        received_at=_opt_utc(row[13]),
    )  # fmt: skip


def _meter_row(m: Meter, now: datetime) -> tuple[Any, ...]:
    return (
        m.meter_id, m.utility.value, m.protocol.value, m.address, m.model, m.device_number, m.payg,
        m.status.value, _opt_utc(m.installed_at), m.consumer_number, m.location, Jsonb(m.tags), now, now,
    )  # fmt: skip


def _meter(row: Any) -> Meter:
    return Meter(
        meter_id=row[0], utility=Utility(row[1]), protocol=Protocol(row[2]), address=row[3],
        model=row[4], device_number=row[5], payg=row[6], status=MeterStatus(row[7]),
        installed_at=_opt_utc(row[8]), consumer_number=row[9], location=row[10], tags=dict(row[11]),
    )  # fmt: skip


def _event(row: Any) -> Event:
    return Event(
        ts=_utc(row[0]), meter_id=row[1], kind=EventKind(row[2]), severity=Severity(row[3]),
        detail=row[4], acknowledged=row[5],
    )  # fmt: skip


def _deadletter(row: Any) -> DeadLetter:
    return DeadLetter(
        ts=_utc(row[0]), source=row[1], where=row[2], reason=row[3], detail=row[4],
        payload=row[5], meter_id=row[6],
    )  # fmt: skip


def _label(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages; never the password. SinkError if unparsable."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # `from None` and no quote of the parser's message: both may show the password.
        msg = "timescale store: the DSN is neither a libpq connection string nor a postgresql:// URL"
        raise SinkError(msg) from None
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    return f"timescale store {host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


@contextlib.contextmanager
def _errors(label: str, action: str) -> Iterator[None]:
    """Translate psycopg / pool failures into SinkUnavailable (retry later) or SinkError."""
    try:
        yield
    except PoolClosed as exc:
        msg = f"{label}: {action}: the store is closed"
        raise SinkError(msg) from exc
    except psycopg.OperationalError as exc:
        # Connection refused or lost, pool timeout (PoolTimeout is an OperationalError),
        # server shutting down, serialization failure, disk full: all pass with time.
        msg = f"{label}: {action}: database unavailable: {exc}"
        raise SinkUnavailable(msg) from exc
    except psycopg.Error as exc:
        hint = " (has migrate() been run?)" if isinstance(exc, psycopg.errors.UndefinedTable) else ""
        msg = f"{label}: {action}: {exc}{hint}"
        raise SinkError(msg) from exc


async def _configure(conn: Conn) -> None:
    """Per new pooled connection: UTC session time zone and the readings staging table."""
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.execute(_STAGING)


class TimescaleStore:
    """`Store` on PostgreSQL, with readings and balances as hypertables when TimescaleDB is
    there. Open with `await TimescaleStore.open(dsn)`; close it after.

    `write` commits one transaction per batch (durable when it returns, as the server's
    synchronous_commit promises). No call waits longer than about `timeout` seconds for a
    connection: a database that is down gives SinkUnavailable, not a hang.
    """

    def __init__(self, pool: AsyncConnectionPool[Conn], *, label: str, chunk_interval: str,
                 timescaledb: bool, clock: Callable[[], datetime]) -> None:  # fmt: skip
        """Use `TimescaleStore.open`; this takes a pool that is already open."""
        self._pool = pool
        self._label = label
        self._chunk_interval = chunk_interval
        self._timescaledb = timescaledb
        self._clock = clock
        #: "timescaledb-apache", "timescaledb-community" or "postgresql" once the database
        #: has been reached; "unknown" before that.
        self.mode = "unknown"

    @classmethod
    async def open(cls, dsn: str, *, chunk_interval: str = "7 days", timeout: float = 5.0,
                   min_size: int = 1, max_size: int = 4, timescaledb: bool = True,
                   clock: Callable[[], datetime] = _utcnow) -> Self:  # fmt: skip
        """Open a connection pool on `dsn` and detect the mode if the database answers.

        Does not migrate, and does not fail when the database is down (the pool keeps
        trying in the background; calls raise SinkUnavailable meanwhile).
        `timescaledb=False` keeps plain tables even where TimescaleDB is installed.
        """
        label = _label(dsn)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout)),
                    "application_name": "meter-gateway"},
            configure=_configure,
            # A connection idle in the pool may have died with the server; check it
            # before handing it out, so a restarted database is picked up at once.
            check=AsyncConnectionPool.check_connection,
            name=label,
        )  # fmt: skip
        with _errors(label, "open"):
            await pool.open(wait=False)
        store = cls(pool, label=label, chunk_interval=chunk_interval, timescaledb=timescaledb,
                    clock=clock)  # fmt: skip
        try:
            await store._detect_mode()
        except SinkUnavailable as exc:
            log.warning("%s: not reachable at start, mode unknown until it is: %s", label, exc)
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def close(self) -> None:
        """Close the pool (waits a few seconds for connections in use). Safe to call twice."""
        await self._pool.close(timeout=5.0)

    # -- plumbing ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _conn(self, action: str) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit; use conn.transaction() to group), errors translated."""
        with _errors(self._label, action):
            async with self._pool.connection() as conn:
                yield conn

    async def _fetch(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        async with self._conn(action) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _detect_mode(self) -> None:
        async with self._conn("detect mode") as conn:
            self.mode = await _mode_of(conn)

    # -- lifecycle ---------------------------------------------------------------
    async def migrate(self) -> None:
        """Enable TimescaleDB when available, then apply pending migrations in order, each
        in its own transaction under an advisory lock (other gateways wait). Idempotent."""
        migrations = load_migrations("storage.timescale")
        async with self._conn("migrate") as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                if self._timescaledb:
                    await self._enable_timescaledb(conn)
            for migration in migrations:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
                    cur = await conn.execute("SELECT version FROM schema_migrations")
                    if not pending([migration], {int(r[0]) for r in await cur.fetchall()}):
                        continue
                    # Settings the migration scripts read (see 0001_init.sql); `true`: they
                    # end with this transaction.
                    await conn.execute(
                        "SELECT set_config('meter_gateway.chunk_interval', %s, true),"
                        " set_config('meter_gateway.hypertables', %s, true)",
                        [self._chunk_interval, "on" if self._timescaledb else "off"],
                    )
                    try:
                        await conn.execute(migration.sql)
                    except psycopg.Error as exc:
                        exc.add_note(f"in migration {migration.version:04d}_{migration.name}.sql")
                        raise
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                        [migration.version, migration.name, self._clock()],
                    )
            self.mode = await _mode_of(conn)

    async def _enable_timescaledb(self, conn: Conn) -> None:
        cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        if await cur.fetchone() is None:
            return
        try:
            # A savepoint: a refusal (not preloaded, no privilege) must not abort the
            # migration; the store then works on plain tables.
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.warning("%s: TimescaleDB is installed but cannot be enabled, using plain "
                        "PostgreSQL tables: %s", self._label, exc)  # fmt: skip

    async def ping(self) -> None:
        """Raise SinkUnavailable if the database cannot be reached within `timeout`."""
        async with self._conn("ping") as conn:
            await conn.execute("SELECT 1")
            if self.mode == "unknown":
                self.mode = await _mode_of(conn)

    # -- sink --------------------------------------------------------------------
    async def write(self, batch: Batch) -> WriteResult:
        """Write the batch in one transaction; committed when this returns. Idempotent."""
        result = WriteResult()
        if len(batch) == 0:
            return result
        async with self._conn("write") as conn, conn.transaction():
            cur = conn.cursor()
            if batch.readings:
                await _write_readings(cur, batch.readings, result)
            if batch.balances:
                await cur.executemany(
                    f"INSERT INTO balances ({_BALANCE_COLS.removeprefix('seq, ')})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (meter_id, ts) DO NOTHING",
                    [_balance_row(b) for b in batch.balances],
                )
                result.balances_inserted = cur.rowcount
            if batch.events:
                await cur.executemany(
                    f"INSERT INTO events ({_EVENT_COLS}) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(_utc(e.ts), e.meter_id, e.kind.value, e.severity.value, e.detail, e.acknowledged)
                     for e in batch.events],
                )  # fmt: skip
                result.events_inserted = len(batch.events)
            if batch.deadletters:
                await cur.executemany(
                    f"INSERT INTO deadletters ({_DEADLETTER_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(_utc(d.ts), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id)
                     for d in batch.deadletters],
                )  # fmt: skip
                result.deadletters_inserted = len(batch.deadletters)
        return result

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters by meter_id; created_at is kept on update."""
        if not meters:
            return
        now = self._clock()
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _METER_COLS.replace(" ", "").split(",") if c != "meter_id")
        async with self._conn("upsert meters") as conn, conn.transaction():
            await conn.cursor().executemany(
                f"INSERT INTO meters ({_METER_COLS}, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (meter_id) DO UPDATE SET {updates}, updated_at = EXCLUDED.updated_at",
                [_meter_row(m, now) for m in meters],
            )

    # -- reader ------------------------------------------------------------------
    async def list_meters(self, *, search: str | None = None, limit: int = 100,
                          after: str | None = None) -> list[Meter]:  # fmt: skip
        """Meters by meter_id after `after`; `search` is a case-insensitive substring of the
        meter number, device number or consumer number."""
        where = ["true"]
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            where.append("meter_id > %(after)s")
            params["after"] = after
        if search:
            where.append("(meter_id ILIKE %(p)s OR device_number ILIKE %(p)s OR consumer_number ILIKE %(p)s)")
            params["p"] = _like(search)
        rows = await self._fetch(
            "list meters",
            f"SELECT {_METER_COLS} FROM meters WHERE {' AND '.join(where)} ORDER BY meter_id LIMIT %(limit)s",
            params,
        )
        return [_meter(r) for r in rows]

    async def get_meter(self, meter_id: str) -> Meter | None:
        """The meter with this meter_id, or None."""
        rows = await self._fetch(
            f"get meter {meter_id}",
            f"SELECT {_METER_COLS} FROM meters WHERE meter_id = %(m)s",
            {"m": meter_id},
        )
        return _meter(rows[0]) if rows else None

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel, ordered by channel: one backward index probe
        per canonical channel (not DISTINCT ON, which reads the meter's whole history
        where TimescaleDB's SkipScan is not available)."""
        rows = await self._fetch(
            f"latest readings of {meter_id}",
            f"SELECT l.* FROM unnest(%(channels)s::text[]) AS c(channel)"
            f" CROSS JOIN LATERAL (SELECT {_READING_COLS} FROM readings AS r"
            "  WHERE r.meter_id = %(m)s AND r.channel = c.channel ORDER BY r.ts DESC LIMIT 1) AS l"
            " ORDER BY l.channel",
            {"m": meter_id, "channels": _ALL_CHANNELS},
        )
        return [_reading(r) for r in rows]

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None) -> list[Reading]:  # fmt: skip
        """Readings with start <= ts < end ordered by (ts, channel), keyset-paginated."""
        where = ["meter_id = %(m)s", "ts >= %(start)s", "ts < %(end)s"]
        params: dict[str, Any] = {"m": meter_id, "start": _utc(start), "end": _utc(end), "limit": limit}
        if channel is not None:
            where.append("channel = %(ch)s")
            params["ch"] = channel.value
        if after is not None:
            where.append("(ts, channel) > (%(after_ts)s, %(after_ch)s)")
            params["after_ts"], params["after_ch"] = _utc(after[0]), str(after[1])
        rows = await self._fetch(
            f"readings of {meter_id}",
            f"SELECT {_READING_COLS} FROM readings WHERE {' AND '.join(where)} ORDER BY ts, channel LIMIT %(limit)s",
            params,
        )
        return [_reading(r) for r in rows]

    async def last_cumulative(self) -> list[LastValue]:
        """The latest reading of every (meter, channel) whose latest reading is cumulative.

        Walks the distinct meters with index seeks (a loose index scan) and probes each
        channel's newest row, so the cost grows with meters (and chunks), not with rows.
        """
        rows = await self._fetch(
            "last cumulative values",
            "WITH RECURSIVE m(meter_id) AS ("
            " (SELECT meter_id FROM readings ORDER BY meter_id LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT r.meter_id FROM readings AS r WHERE r.meter_id > m.meter_id"
            "         ORDER BY r.meter_id LIMIT 1)"
            " FROM m WHERE m.meter_id IS NOT NULL)"
            " SELECT l.meter_id, l.channel, l.ts, l.value"
            " FROM m CROSS JOIN unnest(%(channels)s::text[]) AS c(channel)"
            " CROSS JOIN LATERAL (SELECT meter_id, channel, ts, value, kind FROM readings AS r"
            "  WHERE r.meter_id = m.meter_id AND r.channel = c.channel ORDER BY r.ts DESC LIMIT 1) AS l"
            " WHERE m.meter_id IS NOT NULL AND l.kind = %(kind)s"
            " ORDER BY l.meter_id, l.channel",
            {"channels": _ALL_CHANNELS, "kind": Kind.CUMULATIVE.value},
        )
        return [LastValue(r[0], Channel(r[1]), _utc(r[2]), r[3]) for r in rows]

    async def latest_balance(self, meter_id: str) -> BalanceUpdate | None:
        """The newest balance update of the meter (by ts), or None."""
        rows = await self._fetch(
            f"latest balance of {meter_id}",
            f"SELECT {_BALANCE_COLS} FROM balances WHERE meter_id = %(m)s ORDER BY ts DESC LIMIT 1",
            {"m": meter_id},
        )
        return _balance(rows[0]) if rows else None

    async def balances(self, meter_id: str, *, start: datetime, end: datetime,
                       limit: int = 1000) -> list[BalanceUpdate]:  # fmt: skip
        """Balance updates with start <= ts < end, ordered by ts."""
        rows = await self._fetch(
            f"balances of {meter_id}",
            f"SELECT {_BALANCE_COLS} FROM balances"
            " WHERE meter_id = %(m)s AND ts >= %(start)s AND ts < %(end)s ORDER BY ts LIMIT %(limit)s",
            {"m": meter_id, "start": _utc(start), "end": _utc(end), "limit": limit},
        )
        return [_balance(r) for r in rows]

    async def events(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                     limit: int = 100) -> list[Event]:  # fmt: skip
        """Events, most recent first."""
        where, params = _filters(meter_id=meter_id, kind=None if kind is None else kind.value)
        rows = await self._fetch(
            "events",
            f"SELECT {_EVENT_COLS} FROM events WHERE {where} ORDER BY ts DESC, seq DESC LIMIT %(limit)s",
            {**params, "limit": limit},
        )
        return [_event(r) for r in rows]

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> list[DeadLetter]:  # fmt: skip
        """Dead letters, most recent first."""
        where, params = _filters(meter_id=meter_id, reason=reason)
        rows = await self._fetch(
            "dead letters",
            f"SELECT {_DEADLETTER_COLS} FROM deadletters WHERE {where} ORDER BY ts DESC, seq DESC LIMIT %(limit)s",
            {**params, "limit": limit},
        )
        return [_deadletter(r) for r in rows]


async def _write_readings(cur: psycopg.AsyncCursor[Any], readings: list[Reading],
                          result: WriteResult) -> None:  # fmt: skip
    """COPY the readings into staging, insert the new keys, then find the conflicts."""
    async with cur.copy(f"COPY staging_readings (idx, {_READING_IN}) FROM STDIN") as copy:
        for i, reading in enumerate(readings):
            await copy.write_row(_reading_row(i, reading))
    # ORDER BY idx: seq follows the batch order. Two rows of the batch with one key: the
    # first is inserted, the second hits the conflict and is skipped.
    await cur.execute(
        f"INSERT INTO readings ({_READING_IN}) SELECT {_READING_IN} FROM staging_readings"
        " ORDER BY idx ON CONFLICT (meter_id, channel, ts) DO NOTHING"
    )
    result.readings_inserted = cur.rowcount
    # Every staged key now exists in readings; where the stored value differs, the staged
    # reading lost to an earlier one. The ts bounds let the planner skip other chunks.
    times = [r.ts for r in readings]
    await cur.execute(
        "SELECT s.idx FROM staging_readings AS s JOIN readings AS r"
        " ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts"
        " WHERE r.ts >= %(lo)s AND r.ts <= %(hi)s AND r.value IS DISTINCT FROM s.value"
        " ORDER BY s.idx",
        {"lo": _utc(min(times)), "hi": _utc(max(times))},
    )
    result.conflicts = [readings[row[0]] for row in await cur.fetchall()]
    result.readings_duplicate = len(readings) - result.readings_inserted - len(result.conflicts)


async def _mode_of(conn: Conn) -> str:
    """What this database offers: TimescaleDB's edition, or plain PostgreSQL."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if await cur.fetchone() is None:
        return "postgresql"
    cur = await conn.execute("SHOW timescaledb.license")
    row = await cur.fetchone()
    license_ = str(row[0]) if row else "unknown"
    return _MODES.get(license_, f"timescaledb-{license_}")


def _filters(**equal: str | None) -> tuple[str, dict[str, Any]]:
    """A WHERE clause of `column = %(column)s` for every filter that is set (names are ours)."""
    used = {col: value for col, value in equal.items() if value is not None}
    clause = " AND ".join(f"{col} = %({col})s" for col in used) or "true"
    return clause, used
