"""The write path of the embedded store: one batch, one transaction, one hop to the writer's thread.

`write_batch` runs on the writer connection's own thread (storage.onthread): every statement of the
batch, BEGIN to COMMIT, without returning to the event loop in between, so a busy loop (pollers,
pipeline, API) delays a batch once, not once per statement. The SQL is the store's: readings are
staged in a temporary table so the insert, the duplicate count and the conflict check are set
operations; stored estimates whose real reading arrives are replaced with a new seq.

Rows are made on that thread too: the Python that turns a reading into a row shares the
interpreter with the loop either way, but there it runs in the interpreter's turns instead of as
one long step of the loop. Timestamps shared by many readings (the readings of a poll, the polls of
a round) are converted once.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from typing import Any

from gateway.model import Batch, Reading
from storage.records import ESTIMATE_REPLACED, WriteResult
from storage.sqlite import rows

_IN = rows.READING_IN
_S_IN = ", ".join(f"s.{c.strip()}" for c in _IN.split(","))

_STAGE = f"INSERT INTO temp.staging_readings (idx, {_IN}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Stored estimates whose real reading arrives: replaced (rare, so one by one, each with a new seq
# so the feed shows the real value). Looked up in readings_flagged, the partial index that holds
# every estimate (its predicate has source = 'estimate'): a probe of a small index per staged row
# instead of one of the unique index over every reading (0.9 -> 0.1 µs a row, issue 26).
_ESTIMATES = (
    "SELECT r.seq, min(s.idx) FROM temp.staging_readings AS s JOIN readings AS r INDEXED BY readings_flagged"
    " ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts"
    " WHERE r.source = 'estimate' AND s.source <> 'estimate' GROUP BY r.seq ORDER BY min(s.idx)"
)
_REPLACE = (
    f"UPDATE readings SET (seq, {_IN}, gateway_id) = (SELECT ?, {_S_IN}, ? FROM temp.staging_readings AS s"
    " WHERE s.idx = ?) WHERE seq = ?"
)
# The replaced estimate goes to the reading's audit trail (storage.trail) first: its value, status,
# method (note) and when it was made.
_LOG_REPLACED = (
    "INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, actor, created_at, action,"
    " previous_value, value, rule, recorded_at) SELECT r.meter_id, r.channel, r.ts, r.status, s.status, s.source, ?,"
    f" '{ESTIMATE_REPLACED}', r.value, s.value, r.note, r.received_at"
    " FROM readings AS r JOIN temp.staging_readings AS s ON s.idx = ? WHERE r.seq = ?"
)
_NEXT_SEQ = (
    "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(seq), 0) FROM readings)) + 1"
    " WHERE name = 'readings' RETURNING seq"
)
# ORDER BY idx: seq follows the batch order. WHERE true: SQLite's documented way to keep
# "ON CONFLICT" from being parsed as a join constraint.
_INSERT = (
    f"INSERT INTO readings ({_IN}, gateway_id) SELECT {_IN}, ? FROM temp.staging_readings"
    " WHERE true ORDER BY idx ON CONFLICT (meter_id, channel, ts) DO NOTHING"
)
# Every staged row now has a stored row with its key; those whose stored value differs lost to an
# earlier value (stored before, or earlier in this batch), except estimates arriving for a real
# read: estimates never overwrite and are not news.
_CONFLICTS = (
    "SELECT s.idx FROM temp.staging_readings AS s JOIN readings AS r"
    " ON r.meter_id = s.meter_id AND r.channel = s.channel AND r.ts = s.ts"
    " WHERE r.value IS NOT s.value AND NOT (s.source = 'estimate' AND r.source <> 'estimate') ORDER BY s.idx"
)
_BALANCES = (
    f"INSERT INTO balances ({rows.BALANCE_IN}, gateway_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (meter_id, ts) DO NOTHING"
)
_EVENTS = (
    f"INSERT INTO events ({rows.EVENT_COLS}, ikey, gateway_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ts, ikey) DO NOTHING"
)
_DEADLETTERS = (
    f"INSERT INTO deadletters ({rows.DEADLETTER_COLS}, ikey, gateway_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ts, ikey) DO NOTHING"
)


def write_batch(db: sqlite3.Connection, batch: Batch, gateway_id: str | None,
                now: datetime | None = None) -> WriteResult:  # fmt: skip
    """Write `batch` in one transaction (BEGIN IMMEDIATE ... COMMIT) on `db`, which is in autocommit
    mode (isolation_level None). Rolled back whole if anything fails; the error is raised as is.
    `now`: the time a replaced estimate's trail entry is given (default: the system clock)."""
    result = WriteResult()
    # IMMEDIATE takes the write lock now, so a busy database fails here (after busy_timeout)
    # instead of half-way through the batch.
    db.execute("BEGIN IMMEDIATE")
    try:
        if batch.readings:
            _write_readings(db, batch.readings, result, gateway_id, rows.us(now or datetime.now(UTC)))
        if batch.balances:
            cur = db.executemany(_BALANCES, [(*rows.balance_row(b), gateway_id) for b in batch.balances])
            result.balances_inserted = cur.rowcount
        if batch.events:
            cur = db.executemany(_EVENTS, [(*rows.event_row(e), gateway_id) for e in batch.events])
            result.events_inserted = cur.rowcount
        if batch.deadletters:
            cur = db.executemany(_DEADLETTERS, [(*rows.deadletter_row(d), gateway_id) for d in batch.deadletters])
            result.deadletters_inserted = cur.rowcount
        db.execute("COMMIT")
    except BaseException:
        # Also after a COMMIT that failed (disk full): it may leave the transaction open, and the
        # next BEGIN would then fail as "within a transaction", a refusal, not a retry.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return result


def _write_readings(db: sqlite3.Connection, readings: list[Reading], result: WriteResult,
                    gateway_id: str | None, now_us: int) -> None:  # fmt: skip
    db.execute("DELETE FROM temp.staging_readings")
    db.executemany(_STAGE, _staged(readings))
    replace = db.execute(_ESTIMATES).fetchall()
    for old_seq, idx in replace:
        db.execute(_LOG_REPLACED, (now_us, idx, old_seq))
        seq = db.execute(_NEXT_SEQ).fetchone()[0]
        db.execute(_REPLACE, (seq, gateway_id, idx, old_seq))
    result.readings_inserted = db.execute(_INSERT, (gateway_id,)).rowcount
    result.conflicts = [readings[int(row[0])] for row in db.execute(_CONFLICTS)]
    result.readings_replaced = len(replace)
    result.readings_duplicate = len(readings) - result.readings_inserted - len(result.conflicts) - len(replace)
    db.execute("DELETE FROM temp.staging_readings")


def _staged(readings: list[Reading]) -> list[tuple[Any, ...]]:
    """(idx, *reading_row) of each reading; each distinct timestamp converted once."""
    # By identity (the readings hold every datetime while this runs, so no id is reused meanwhile).
    micros: dict[int, int] = {}

    def us(value: datetime) -> int:
        found = micros.get(id(value))
        if found is None:
            found = micros[id(value)] = rows.us(value)
        return found

    # _value_, not .value: on Python 3.11 .value is a descriptor call, four times the cost.
    return [(i, r.meter_id, r.channel._value_, us(r.ts), r.value, r.kind._value_, int(r.quality), r.status._value_,
             r.source._value_, None if r.received_at is None else us(r.received_at), r.note)
            for i, r in enumerate(readings)]  # fmt: skip
