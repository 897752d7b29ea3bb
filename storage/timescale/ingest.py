"""The write path of the PostgreSQL store: exactly-once readings at close to COPY speed.

Fast path: binary COPY straight into the readings hypertable, inside a savepoint. The
unique index on (meter_id, channel, ts) makes it all-or-nothing: either every key of the
batch was new and each row is stored once, or the COPY fails with unique_violation (a
replayed or overlapping batch, a re-delivery, a key twice in the batch, or another
gateway that just wrote the key: its commit is waited for) and is rolled back whole.

Careful path, taken only after that: COPY into a per-connection staging table, replace
stored estimates by real reads, `INSERT ... ON CONFLICT DO NOTHING`, then find the
conflicts with one join. Same result as the fast path for new keys, and exact
bookkeeping (inserted, duplicate, conflict, replaced) for the rest.

Balance updates take the same fast path, with the unique (meter_id, ts) as the guard;
their fallback is a plain `INSERT ... ON CONFLICT DO NOTHING`, whose row count is exact
(a balance update is never replaced, and a stored one always wins).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors

from gateway.model import BalanceUpdate, Batch, Reading
from storage.records import ESTIMATE_REPLACED, WriteResult
from storage.timescale import rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Each pooled connection gets its own staging table when it is opened; ON COMMIT DELETE
# ROWS empties it after each batch.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx integer, meter_id text COLLATE "C", channel text COLLATE "C", ts timestamptz,
    value double precision, kind text, quality integer, status text, source text,
    received_at timestamptz, note text
) ON COMMIT DELETE ROWS"""

# The replaced estimate goes to the reading's audit trail (storage.trail) first: its value, status,
# method (note) and when it was made. FOR UPDATE: of two writers with the same real read, the
# second finds the row no longer an estimate once the first commits, and logs nothing.
_REPLACE_ESTIMATES = f"""
WITH s AS (SELECT DISTINCT ON (meter_id, channel, ts) {rows.READING_IN}, idx FROM staging_readings
           WHERE source <> 'estimate' ORDER BY meter_id, channel, ts, idx),
old AS (SELECT r.meter_id, r.channel, r.ts, r.value, r.status, r.note, r.received_at FROM readings AS r
        JOIN s ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts
        WHERE r.source = 'estimate' AND r.ts >= %(lo)s AND r.ts <= %(hi)s FOR UPDATE OF r),
logged AS (INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, actor, created_at, action,
                                         previous_value, value, rule, recorded_at)
           SELECT o.meter_id, o.channel, o.ts, o.status, s.status, s.source, coalesce(%(now)s::timestamptz, now()),
                  '{ESTIMATE_REPLACED}', o.value, s.value, o.note, o.received_at
           FROM old AS o JOIN s ON o.meter_id = s.meter_id AND o.channel = s.channel AND o.ts = s.ts)
UPDATE readings AS r SET value = s.value, kind = s.kind, quality = s.quality, status = s.status,
    source = s.source, received_at = s.received_at, note = s.note, seq = nextval('readings_seq'),
    gateway_id = DEFAULT
FROM old AS o JOIN s ON o.meter_id = s.meter_id AND o.channel = s.channel AND o.ts = s.ts
WHERE r.meter_id = o.meter_id AND r.channel = o.channel AND r.ts = o.ts
  AND r.ts >= %(lo)s AND r.ts <= %(hi)s
RETURNING s.idx"""

# ORDER BY idx: seq follows the batch order. Two rows of the batch with one key: the
# first is inserted, the second hits the conflict and is skipped.
_INSERT_NEW = (
    f"INSERT INTO readings ({rows.READING_IN}) SELECT {rows.READING_IN} FROM staging_readings"
    " ORDER BY idx ON CONFLICT (meter_id, channel, ts) DO NOTHING"
)

# Every staged key now exists; where the stored value differs, the staged reading lost to
# an earlier one, unless it is an estimate arriving for a real read (estimates never
# overwrite and are not news). The ts bounds let the planner skip other chunks.
_CONFLICTS = """
SELECT s.idx FROM staging_readings AS s JOIN readings AS r
  ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts
WHERE r.ts >= %(lo)s AND r.ts <= %(hi)s AND r.value IS DISTINCT FROM s.value
  AND NOT (s.source = 'estimate' AND r.source <> 'estimate')
ORDER BY s.idx"""


async def write_batch(conn: Conn, batch: Batch, *, fast: bool = True, now: datetime | None = None) -> WriteResult:
    """Write `batch` inside the caller's transaction. `fast=False` skips the COPY attempts
    (used by the benchmark to measure the careful path alone). `now`: the time a replaced
    estimate's trail entry is given (the database's clock if None)."""
    result = WriteResult()
    cur = conn.cursor()
    if batch.readings:
        # Before the first seq is taken: the change feed's visibility protocol.
        await cur.execute("SELECT meter_gateway_feed_register()")
        copied = fast and await _copy_new(
            conn, "readings", rows.READING_IN, rows.READING_TYPES, map(rows.reading_row, batch.readings)
        )
        if copied:
            result.readings_inserted = len(batch.readings)
        else:
            await _write_careful(cur, batch.readings, result, now)
    if batch.balances:
        copied = fast and await _copy_new(
            conn, "balances", rows.BALANCE_IN, rows.BALANCE_TYPES, map(rows.balance_row, batch.balances)
        )
        result.balances_inserted = len(batch.balances) if copied else await _insert_balances(cur, batch.balances)
    if batch.events:
        await cur.executemany(
            f"INSERT INTO events ({rows.EVENT_COLS}, ikey) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (ts, ikey) DO NOTHING",
            [rows.event_row(e) for e in batch.events],
        )
        result.events_inserted = cur.rowcount
    if batch.deadletters:
        await cur.executemany(
            f"INSERT INTO deadletters ({rows.DEADLETTER_COLS}, ikey) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (ts, ikey) DO NOTHING",
            [rows.deadletter_row(d) for d in batch.deadletters],
        )
        result.deadletters_inserted = cur.rowcount
    return result


async def _copy_new(conn: Conn, table: str, columns: str, types: list[str], values: Iterable[tuple[Any, ...]]) -> bool:
    """Binary COPY of `values` into `table` in a savepoint; False (and nothing written) if a
    key exists. Any other error fails the batch: only a duplicate key has a fallback."""
    try:
        async with conn.transaction(), conn.cursor().copy(
            f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(types)
            for row in values:
                await copy.write_row(row)
    except errors.UniqueViolation:
        return False
    return True


async def _insert_balances(cur: psycopg.AsyncCursor[Any], balances: list[BalanceUpdate]) -> int:
    """Insert the updates whose (meter_id, ts) is new, in batch order (the first of a key
    twice in the batch wins); returns how many were inserted."""
    placeholders = ", ".join(["%s"] * len(rows.BALANCE_TYPES))
    await cur.executemany(
        f"INSERT INTO balances ({rows.BALANCE_IN}) VALUES ({placeholders}) ON CONFLICT (meter_id, ts) DO NOTHING",
        [rows.balance_row(b) for b in balances],
        returning=False,
    )
    return cur.rowcount


async def _write_careful(cur: psycopg.AsyncCursor[Any], readings: list[Reading], result: WriteResult,
                         now: datetime | None) -> None:
    async with cur.copy(f"COPY staging_readings (idx, {rows.READING_IN}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", *rows.READING_TYPES])
        for i, r in enumerate(readings):
            await copy.write_row((i, *rows.reading_row(r)))
    times = [r.ts for r in readings]
    bounds = {"lo": rows.utc(min(times)), "hi": rows.utc(max(times))}
    await cur.execute(_REPLACE_ESTIMATES, {**bounds, "now": None if now is None else rows.utc(now)})
    replaced = {row[0] for row in await cur.fetchall()}
    await cur.execute(_INSERT_NEW)
    result.readings_inserted = cur.rowcount
    await cur.execute(_CONFLICTS, bounds)
    result.conflicts = [readings[row[0]] for row in await cur.fetchall()]
    result.readings_replaced = len(replaced)
    result.readings_duplicate = len(readings) - result.readings_inserted - len(result.conflicts) - len(replaced)


async def record_channels(conn: Conn, pairs: set[tuple[str, str]]) -> None:
    """Add (meter_id, channel) pairs to meter_channels, which "latest readings" probes.

    Sorted, so two writers adding overlapping new pairs lock them in the same order and
    cannot deadlock; DO NOTHING takes no lock on a pair that is already there.
    """
    ordered = sorted(pairs)
    await conn.execute(
        "INSERT INTO meter_channels (meter_id, channel)"
        " SELECT m, c FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS p(m, c, i) ORDER BY i"
        " ON CONFLICT DO NOTHING",
        [[p[0] for p in ordered], [p[1] for p in ordered]],
    )
