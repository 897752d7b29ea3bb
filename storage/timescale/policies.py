"""What the database's edition allows for old data, and doing it.

    mode                      retention                          also
    timescaledb-community     add_retention_policy (TimescaleDB   compression of chunks older than
                              runs the job)                       `compress_after`, a continuous
                                                                  aggregate of daily consumption,
                                                                  a reorder policy on readings
    timescaledb-apache        the gateway's own drop_chunks,      time_bucket / index probes on raw
                              scheduled by the runtime            data; closed readings chunks
                                                                  CLUSTERed by the runtime
    postgresql                the gateway's own DELETE by time    (plain tables)

The community statements are refused by the Apache build these machines have ("not
supported under the current apache license"); the tests run them there and assert
exactly that refusal, which proves they parse and reach TimescaleDB.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from storage.records import ReorderResult, RetentionResult
from storage.retention import as_sql_interval

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

COMMUNITY = "timescaledb-community"
APACHE = "timescaledb-apache"
PLAIN = "postgresql"
#: Hypertables with their time column; deadletters stays a plain table everywhere.
HYPERTABLES = ("readings", "balances", "events")
PLAIN_TABLES = ("deadletters",)

#: Daily consumption per meter and channel, kept up to date by TimescaleDB (community).
#: first/last read of each UTC day and the rollover moduli inside it: a day's consumption
#: is last - first of the next day's opening, as storage.consumption computes it.
DAILY_VIEW = "readings_daily"

#: Readings arrive interleaved by meter (every meter's poll of one interval together), so
#: in a chunk's heap one meter's month of one channel lies on ~2,900 pages. Rewritten in the
#: order of this index (meter_id, channel, ts) it lies on ~80, and PostgreSQL's part of that
#: query fell from ~6 to ~2 ms (bench/ingest.py). Community: TimescaleDB's reorder policy;
#: Apache: CLUSTER of each chunk once it is closed (`reorder_closed`).
REORDER_INDEX = "readings_key"
#: A chunk is closed when its time range ended this long ago (late data may still arrive
#: after; it lands at the end of the heap, correct, just not in order).
REORDER_AFTER = timedelta(hours=6)
#: CLUSTER takes an exclusive lock on the chunk: wait at most this long for readers and
#: writers to let go (queued behind a long read, it would hold every later one up).
REORDER_LOCK_TIMEOUT = "2s"
_REORDER_LOCK = (0x6D67, 0x726F)  # "mg", "ro": advisory lock of the reorder run


def retention_mode(mode: str, retention: timedelta | None) -> str:
    """Which mechanism removes old data in `mode`: policy, drop_chunks, delete or off."""
    if retention is None:
        return "off"
    if mode == COMMUNITY:
        return "policy"
    if mode == APACHE:
        return "drop_chunks"
    return "delete"


def community_statements(retention: timedelta | None, compress_after: timedelta) -> list[str]:
    """The statements that set up compression, retention and the daily aggregate (idempotent)."""
    out = []
    for table, segment in (("readings", "meter_id, channel"), ("balances", "meter_id"), ("events", "kind")):
        out.append(f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment}',"
                   " timescaledb.compress_orderby = 'ts')")  # fmt: skip
        out.append(f"SELECT add_compression_policy('{table}', INTERVAL '{as_sql_interval(compress_after)}',"
                   " if_not_exists => true)")  # fmt: skip
        if retention is not None:
            # Replace, so that a changed retention takes effect.
            out.append(f"SELECT remove_retention_policy('{table}', if_exists => true)")
            out.append(f"SELECT add_retention_policy('{table}', INTERVAL '{as_sql_interval(retention)}')")
    out.append(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DAILY_VIEW} WITH (timescaledb.continuous) AS"
        " SELECT meter_id, channel, time_bucket(INTERVAL '1 day', ts) AS day,"
        " first(value, ts) AS first_value, last(value, ts) AS last_value,"
        " min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS reads,"
        " sum(CASE WHEN quality & 2 <> 0 THEN substring(note from 'modulus=([0-9.eE+-]+)')::float8 END) AS rollover,"
        " bool_or(status = 'estimated' OR source = 'estimate') AS estimated"
        " FROM readings WHERE kind = 'cumulative' AND status <> 'rejected'"
        " GROUP BY meter_id, channel, time_bucket(INTERVAL '1 day', ts) WITH NO DATA"
    )
    out.append(f"SELECT add_reorder_policy('readings', '{REORDER_INDEX}', if_not_exists => true)")
    out.append(
        f"SELECT add_continuous_aggregate_policy('{DAILY_VIEW}', start_offset => INTERVAL '3 days',"
        " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', if_not_exists => true)"
    )
    return out


async def set_up_community(conn: Conn, retention: timedelta | None, compress_after: timedelta) -> None:
    """Run `community_statements` in one transaction (the caller's connection, autocommit)."""
    # CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) cannot run inside a
    # transaction block: run each statement on its own.
    for statement in community_statements(retention, compress_after):
        await conn.execute(statement)


async def drop_old(conn: Conn, mode: str, cutoff: datetime) -> RetentionResult:
    """Remove data older than `cutoff`: drop_chunks on hypertables (Apache), DELETE elsewhere."""
    removed: dict[str, int] = {}
    if mode == APACHE:
        for table in HYPERTABLES:
            cur = await conn.execute("SELECT count(*) FROM drop_chunks(%s, older_than => %s)", [table, cutoff])
            row = await cur.fetchone()
            removed[table] = int(row[0]) if row else 0
        tables: tuple[str, ...] = PLAIN_TABLES
        how = "drop_chunks"
    else:
        tables = (*HYPERTABLES, *PLAIN_TABLES)
        how = "delete"
    for table in tables:
        total = 0
        while True:
            # In slices, so that a first run on years of data does not hold one huge
            # transaction (and its locks) open.
            cur = await conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE ts < %s LIMIT 50000))",
                [cutoff],
            )
            total += cur.rowcount
            if cur.rowcount < 50000:
                break
        removed[table] = total
    return RetentionResult(how, cutoff, removed)


# The readings chunks closed before the cut-off whose key index is not yet the clustered
# one (CLUSTER marks it), newest first: recent months are read most.
_UNORDERED_CHUNKS = """
SELECT c.chunk_schema, c.chunk_name, ci.index_name
FROM timescaledb_information.chunks AS c
JOIN _timescaledb_catalog.chunk AS k ON k.schema_name = c.chunk_schema AND k.table_name = c.chunk_name
JOIN _timescaledb_catalog.chunk_index AS ci ON ci.chunk_id = k.id AND ci.hypertable_index_name = %(index)s
JOIN pg_index AS i ON i.indexrelid = to_regclass(format('%%I.%%I', c.chunk_schema, ci.index_name))
WHERE to_regclass(format('%%I.%%I', c.hypertable_schema, c.hypertable_name)) = 'readings'::regclass
  AND c.range_end <= %(cutoff)s AND NOT c.is_compressed AND NOT i.indisclustered
ORDER BY c.range_end DESC
"""
# Whether the chunk still needs it (another gateway may have done it since the list was made,
# or retention dropped it): NULL (dropped) or false means skip.
_STILL_UNORDERED = (
    "SELECT NOT indisclustered FROM pg_index WHERE indexrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(index)s::text))"
)


async def reorder_closed(conn: Conn, now: datetime, *, budget: float | None) -> ReorderResult:
    """CLUSTER each closed, not yet reordered readings chunk on `REORDER_INDEX` (Apache mode;
    `conn` in autocommit). Each chunk in its own transaction, holding the advisory lock
    that makes gateways sharing the database take turns, with SET LOCAL timeouts, so that
    nothing outlives it on the pooled connection, even when the run is cancelled. A chunk
    whose lock is not granted within REORDER_LOCK_TIMEOUT is left for the next run, as is
    one the database refuses for another reason (logged); no chunk is started after `budget`
    seconds, and another gateway's run in progress ends this one."""
    cur = await conn.execute(_UNORDERED_CHUNKS, {"index": REORDER_INDEX, "cutoff": now - REORDER_AFTER})
    todo = await cur.fetchall()
    started = time.monotonic()
    done: list[str] = []
    busy: list[str] = []
    gone = 0
    for schema, chunk, index in todo:
        if budget is not None and time.monotonic() - started >= budget:
            break
        name = f"{schema}.{chunk}"
        try:
            async with conn.transaction():
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", _REORDER_LOCK)
                row = await cur.fetchone()
                if not (row and row[0]):
                    break  # another gateway is at it: it will do the rest
                await conn.execute(f"SET LOCAL lock_timeout = '{REORDER_LOCK_TIMEOUT}'")
                await conn.execute("SET LOCAL statement_timeout = 0")  # a server-wide limit would stop it every time
                cur = await conn.execute(_STILL_UNORDERED, {"schema": schema, "index": index})
                row = await cur.fetchone()
                if not (row and row[0]):
                    gone += 1
                    continue
                await conn.execute(sql.SQL("CLUSTER {} USING {}").format(sql.Identifier(schema, chunk),
                                                                       sql.Identifier(index)))
        except psycopg.errors.LockNotAvailable:
            busy.append(name)
            continue
        except psycopg.errors.UndefinedTable:
            gone += 1  # dropped by retention between the check and CLUSTER
            continue
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            log.warning("reordering %s failed (tried again next run): %s", name, exc)
            busy.append(name)
            continue
        done.append(name)
    return ReorderResult("cluster", tuple(done), tuple(busy), len(todo) - len(done) - gone)
