"""Rows of the PostgreSQL store: the shared codec (storage.sql.rows) bound to POSTGRES
(aware UTC datetimes, numeric money, jsonb), plus the binary COPY types of the write path."""

from __future__ import annotations

from typing import Any

import storage.sql.rows as common
from gateway.model import Reading
from storage.rows import CHANNEL, KIND, SOURCE, STATUS, quality
from storage.sql.dialect import POSTGRES

#: Binary COPY types of READING_IN, in order.
READING_TYPES = ["text", "text", "timestamptz", "float8", "text", "int4", "text", "text", "timestamptz", "text"]
#: Binary COPY types of BALANCE_IN, in order (money columns are numeric: Decimal, exact).
BALANCE_TYPES = [
    "text", "timestamptz", "numeric", "text", "numeric", "bool", "numeric", "text", "numeric", "timestamptz",
    "bool", "bool", "timestamptz",
]  # fmt: skip
READING_IN = common.READING_IN
READING_COLS = common.READING_COLS
BALANCE_IN = common.BALANCE_IN
BALANCE_COLS = common.BALANCE_COLS
METER_COLS = common.METER_COLS
EVENT_COLS = common.EVENT_COLS
DEADLETTER_COLS = common.DEADLETTER_COLS
COMMAND_COLS = common.COMMAND_COLS



def _reading(row: Any) -> Reading:
    # The session time zone is UTC (see store._configure): timestamps come back in UTC, and
    # a page of readings is converted without a call per timestamp.
    return Reading(
        row[1], CHANNEL[row[2]], row[3], row[4], KIND[row[5]], quality(row[6]), STATUS[row[7]], SOURCE[row[8]],
        row[9], row[0], row[10], row[11],
    )  # fmt: skip


ROWS = common.Rows(POSTGRES, reading=_reading)
utc, opt_utc = POSTGRES.ts, POSTGRES.opt_ts
reading_row, reading = ROWS.reading_row, ROWS.reading
balance_row, balance = ROWS.balance_row, ROWS.balance
meter_row, meter = ROWS.meter_row, ROWS.meter
event_row, event = ROWS.event_row, ROWS.event
deadletter_row, deadletter = ROWS.deadletter_row, ROWS.deadletter
command_row, command = ROWS.command_row, ROWS.command
