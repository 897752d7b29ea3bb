"""The production store: PostgreSQL with TimescaleDB (or plain PostgreSQL), via psycopg 3.

Many gateways may write to one database: writes are idempotent on their natural keys,
`seq` comes from a database sequence, and migrations take an advisory lock. Every
psycopg failure is translated once, here: connection trouble (and a pool that cannot
hand out a connection within `timeout`) becomes SinkUnavailable, anything else SinkError.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolClosed

from gateway.errors import InvalidRequest, SinkError, SinkUnavailable
from gateway.model import Batch, Channel, Meter, Reading, Status
from storage.boundary import DEFAULT_ESTIMATE_WINDOW
from storage.coalesce import Coalescer
from storage.migrate import load_migrations, pending
from storage.records import ReorderResult, RetentionResult, WriteResult
from storage.sql.accounts import SqlAccounts
from storage.sql.conn import Conn as SqlConn
from storage.sql.conn import PgConn
from storage.sql.dialect import POSTGRES
from storage.sql.reads import SqlReads
from storage.sql.registry import SqlRegistry
from storage.timescale import policies, rows
from storage.timescale.ingest import STAGING, record_channels, write_batch
from storage.timescale.queries import GENERIC_PLANS, TimescaleQueries, edit_in, set_status_in

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Any constant works; it only has to be the same for every gateway sharing the database.
# Two-int form (objsubid 2) under a class of its own, away from the feed's keys.
_MIGRATE_LOCK = (0x6D67, 0x6D69)  # "mg", "mi"
_MODES = {"apache": policies.APACHE, "timescale": policies.COMMUNITY}


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        missing = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)
        hint = " (has migrate() been run?)" if isinstance(exc, missing) else ""
        msg = f"{label}: {action}: {exc}{hint}"
        raise SinkError(msg) from exc
    except UnicodeEncodeError as exc:
        # psycopg refuses NUL as a DataError, but lets a lone surrogate's UnicodeEncodeError
        # through: either way the row cannot be stored (the SQLite store says the same).
        msg = f"{label}: {action}: text the database cannot hold: {exc}"
        raise SinkError(msg) from exc


async def _configure(conn: Conn, *, gateway_id: str | None) -> None:
    """Per new pooled connection: UTC session time zone, the readings staging table, and
    the gateway id that the written tables' gateway_id column takes as its default."""
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.execute(STAGING)
    await conn.execute("SELECT set_config('meter_gateway.gateway_id', %s, false)", [gateway_id or ""])


async def _check_if_dropped(conn: Conn) -> None:
    """The pool's check before it hands a connection out: a round trip only when the socket
    says the server may have gone (readable while idle: a closed socket reads EOF, and a
    server shutting down sends its FATAL first). The round trip on every checkout cost more
    than a keyed query itself (15 % of a latest-reading request's time in the API)."""
    if conn.closed:
        msg = "connection closed"
        raise psycopg.OperationalError(msg)
    # poll(), not select(): select refuses descriptors past 1023, which a busy gateway can reach.
    idle = select.poll()
    idle.register(conn.fileno(), select.POLLIN)
    if idle.poll(0):
        await AsyncConnectionPool.check_connection(conn)


class TimescaleStore(TimescaleQueries, SqlAccounts, SqlRegistry, SqlReads):
    """`Store` on PostgreSQL, with readings, balances and events as hypertables when
    TimescaleDB is there. Open with `await TimescaleStore.open(dsn)`; close it after.

    `write` commits one transaction per batch (durable when it returns, as the server's
    synchronous_commit promises). No call waits longer than about `timeout` seconds for a
    connection: a database that is down gives SinkUnavailable, not a hang.
    """

    dialect = POSTGRES
    rows = rows.ROWS

    def __init__(self, pool: AsyncConnectionPool[Conn], *, label: str, chunk_interval: str,
                 timescaledb: bool, clock: Callable[[], datetime], retention: timedelta | None = None,
                 compress_after: timedelta = timedelta(days=30),
                 estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW) -> None:  # fmt: skip
        """Use `TimescaleStore.open`; this takes a pool that is already open."""
        self._pool = pool
        #: A real read this close before a period's boundary wins over a newer estimate.
        self.estimate_window = estimate_window
        self._label = label
        self._chunk_interval = chunk_interval
        self._timescaledb = timescaledb
        self._clock = clock
        self.retention = retention
        self.compress_after = compress_after
        #: (meter_id, channel) pairs this process knows are in meter_channels: a write adds
        #: only the others, so the table costs the write path nothing in the steady state.
        self._known_channels: set[tuple[str, str]] = set()
        # Half the pool at once, so that other reads still find a connection; the rest of a
        # burst of "latest" calls share the next query.
        self._latest: Coalescer[str, list[Any]] = Coalescer(self._latest_of, [], limit=max(1, pool.max_size // 2))
        #: "timescaledb-apache", "timescaledb-community" or "postgresql" once the database
        #: has been reached; "unknown" before that.
        self.mode = "unknown"

    @classmethod
    async def open(cls, dsn: str, *, chunk_interval: str = "7 days", timeout: float = 5.0,
                   min_size: int = 1, max_size: int = 4, timescaledb: bool = True,
                   retention: timedelta | None = None, compress_after: timedelta = timedelta(days=30),
                   clock: Callable[[], datetime] = _utcnow, gateway_id: str | None = None,
                   estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW) -> Self:  # fmt: skip
        """Open a connection pool on `dsn` and detect the mode if the database answers.

        Does not migrate, and does not fail when the database is down (the pool keeps
        trying in the background; calls raise SinkUnavailable meanwhile).
        `timescaledb=False` keeps plain tables even where TimescaleDB is installed.
        `retention`: how long data is kept (None: for ever); `compress_after`: age at which
        chunks are compressed where the license allows it. `gateway_id` is stamped on the
        readings, balance updates, events and dead letters written through this store.
        `estimate_window`: see storage.consumption (a period's boundary read).
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
            configure=functools.partial(_configure, gateway_id=gateway_id),
            # A connection idle in the pool may have died with the server; check it
            # before handing it out, so a restarted database is picked up at once.
            check=_check_if_dropped,
            name=label,
        )  # fmt: skip
        with _errors(label, "open"):
            await pool.open(wait=False)
        store = cls(pool, label=label, chunk_interval=chunk_interval, timescaledb=timescaledb,
                    clock=clock, retention=retention, compress_after=compress_after,
                    estimate_window=estimate_window)  # fmt: skip
        try:
            await store._detect_mode()
        except SinkUnavailable as exc:
            log.warning("%s: not reachable at start, mode unknown until it is: %s", label, exc)
        return store

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

    @contextlib.asynccontextmanager
    async def _tx(self, action: str) -> AsyncIterator[SqlConn]:
        async with self._conn(action) as conn, conn.transaction():
            yield PgConn(conn)

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[SqlConn]:
        async with self._conn(action) as conn:
            yield PgConn(conn)

    async def _fetch(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        async with self._conn(action) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _fetch_generic(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """A read over a time range of a hypertable: prepared, with a generic plan (see
        queries.GENERIC_PLANS). Its transaction costs two round trips more than `_fetch`, so
        keyed lookups that plan in microseconds use `_fetch`. (Pipelining those round trips
        was measured: psycopg's pipeline costs more client CPU than the localhost round trips
        it saves.) Rows come in binary: a month of readings parsed 35-40 % faster than as
        text (timestamps and floats are not parsed from strings)."""
        async with self._conn(action) as conn, conn.transaction():
            await conn.execute(GENERIC_PLANS)
            cur = await conn.execute(sql, params, prepare=True, binary=True)
            return await cur.fetchall()

    async def _select(self, action: str, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return await self._fetch(action, POSTGRES.sql(sql), dict(params or {}))

    async def _select_range(self, action: str, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return await self._fetch_generic(action, POSTGRES.sql(sql), dict(params or {}))

    async def _detect_mode(self) -> None:
        async with self._conn("detect mode") as conn:
            self.mode = await _mode_of(conn)

    @property
    def retention_mode(self) -> str:
        """How old data goes: "policy", "drop_chunks", "delete" or "off" (see policies)."""
        return policies.retention_mode(self.mode, self.retention)

    # -- lifecycle ---------------------------------------------------------------
    async def migrate(self, *, upto: int | None = None) -> None:
        """Enable TimescaleDB when available, then apply pending migrations in order, each
        in its own transaction under an advisory lock (other gateways wait). Idempotent.
        Under the community license, then sets up compression, retention and the daily
        aggregate."""
        migrations = [m for m in load_migrations("storage.timescale") if upto is None or m.version <= upto]
        async with self._conn("migrate") as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATE_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                if self._timescaledb:
                    await self._enable_timescaledb(conn)
            for migration in migrations:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATE_LOCK)
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
            if self.mode == policies.COMMUNITY:
                await policies.set_up_community(conn, self.retention, self.compress_after)
        log.info("%s: mode %s, retention %s", self._label, self.mode, self._describe_retention())

    def _describe_retention(self) -> str:
        how = self.retention_mode
        if how == "off":
            return "off (data kept for ever)"
        what = {"policy": "TimescaleDB retention policy", "drop_chunks": "the gateway's scheduled drop_chunks",
                "delete": "the gateway's scheduled DELETE"}[how]
        return f"{self.retention} by {what}"

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

    async def apply_retention(self, now: datetime | None = None) -> RetentionResult:
        """Drop data older than the retention (see policies for who does it in which mode)."""
        if self.mode == "unknown":
            await self._detect_mode()
        how = self.retention_mode
        if self.retention is None or how == "policy":
            return RetentionResult(how, None)
        cutoff = rows.utc(now or self._clock()) - self.retention
        async with self._conn("apply retention") as conn:
            result = await policies.drop_old(conn, self.mode, cutoff)
        if any(result.removed.values()):
            log.info("%s: retention removed %s older than %s", self._label, result.removed, cutoff.isoformat())
        return result

    async def reorder(self, now: datetime | None = None, *, budget: float | None = 60.0) -> ReorderResult:
        """Rewrite closed readings chunks in (meter_id, channel, ts) order (see policies)."""
        if self.mode == "unknown":
            await self._detect_mode()
        if self.mode == policies.COMMUNITY:
            return ReorderResult("policy")
        if self.mode != policies.APACHE:
            # One plain table: CLUSTER would rewrite (and lock) all of it every time.
            return ReorderResult("off")
        async with self._conn("reorder readings chunks") as conn:
            result = await policies.reorder_closed(conn, rows.utc(now or self._clock()), budget=budget)
        if result.reordered or result.busy:
            log.info("%s: reordered %d readings chunks by meter (%s); %d left%s", self._label,
                     len(result.reordered), ", ".join(result.reordered) or "none", result.left,
                     f", {len(result.busy)} busy (tried again next run)" if result.busy else "")  # fmt: skip
        return result

    # -- sink --------------------------------------------------------------------
    async def write(self, batch: Batch, *, fast: bool = True) -> WriteResult:
        """Write the batch in one transaction; committed when this returns. Idempotent.

        See storage.timescale.ingest for the exactly-once fast path; `fast=False` takes
        the staging path only (for comparison in the benchmark)."""
        if len(batch) == 0:
            return WriteResult()
        pairs = {(r.meter_id, r.channel.value) for r in batch.readings} - self._known_channels
        async with self._conn("write") as conn, conn.transaction():
            result = await write_batch(conn, batch, fast=fast, now=self._clock())
            if pairs:
                await record_channels(conn, pairs)
        # Only after the commit: a rolled-back batch must not mark its pairs as recorded.
        self._known_channels |= pairs
        return result

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters by meter_id; created_at is kept on update."""
        if not meters:
            return
        now = self._clock()
        updates = ", ".join(
            f"{c} = EXCLUDED.{c}" for c in rows.METER_COLS.replace(" ", "").split(",") if c != "meter_id"
        )
        async with self._conn("upsert meters") as conn, conn.transaction():
            await conn.cursor().executemany(
                f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (meter_id) DO UPDATE SET {updates}, updated_at = EXCLUDED.updated_at",
                [rows.meter_row(m, now) for m in meters],
            )

    async def set_status(self, meter_id: str, channel: Channel, ts: datetime, status: Status, *,
                         note: str, by: str, key_id: str | None = None) -> Reading:  # fmt: skip
        """A person's verdict on a reading (see Store.set_status), under the reading's row lock:
        concurrent verdicts from gateways sharing the database take turns."""
        _check_verdict(status)
        async with self._conn(f"set status of {meter_id}") as conn, conn.transaction():
            return await set_status_in(conn, meter_id, channel, ts, status, note=note, by=by, now=self._clock(),
                                       key_id=key_id)


    async def edit_reading(self, meter_id: str, channel: Channel, ts: datetime, value: float, *,
                           note: str, by: str, key_id: str | None = None) -> Reading:  # fmt: skip
        """A person's corrected value: see Store.edit_reading. The row lock orders concurrent edits."""
        async with self._conn(f"edit a reading of {meter_id}") as conn, conn.transaction():
            return await edit_in(conn, meter_id, channel, ts, value, note=note, by=by, now=self._clock(),
                                 key_id=key_id)

def _check_verdict(status: Status) -> None:
    if status is Status.ESTIMATED:
        msg = "set status: 'estimated' is not a verdict (estimates come from the estimator, with source=estimate)"
        raise InvalidRequest(msg)


async def _mode_of(conn: Conn) -> str:
    """What this database offers: TimescaleDB's edition, or plain PostgreSQL."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if await cur.fetchone() is None:
        return policies.PLAIN
    cur = await conn.execute("SHOW timescaledb.license")
    row = await cur.fetchone()
    license_ = str(row[0]) if row else "unknown"
    return _MODES.get(license_, f"timescaledb-{license_}")


__all__ = ["TimescaleStore"]
