"""What the database's edition allows for old data, and doing it.

    mode                      retention                          also
    timescaledb-community     add_retention_policy (TimescaleDB   compression of chunks older than
                              runs the job)                       `compress_after`, a continuous
                                                                  aggregate of daily consumption
    timescaledb-apache        the gateway's own drop_chunks,      time_bucket / index probes on raw
                              scheduled by the runtime            data
    postgresql                the gateway's own DELETE by time    (plain tables)

The community statements are refused by the Apache build these machines have ("not
supported under the current apache license"); the tests run them there and assert
exactly that refusal, which proves they parse and reach TimescaleDB.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from storage.base import RetentionResult
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
    out.append(
        f"SELECT add_continuous_aggregate_policy('{DAILY_VIEW}', start_offset => INTERVAL '3 days',"
        " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', if_not_exists => true)"
    )
    return out


async def set_up_community(conn: Conn, retention: timedelta | None, compress_after: timedelta) -> None:
    """Run `community_statements` in one transaction (the caller's connection, autocommit)."""
    # CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) cannot run inside a
    # transaction block: run each statement on its own.
    for sql in community_statements(retention, compress_after):
        await conn.execute(sql)


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
