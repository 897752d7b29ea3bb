"""Rows of the PostgreSQL store: the shared codec (storage.sql.rows) bound to POSTGRES
(aware UTC datetimes, numeric money, jsonb), plus the binary COPY types of the write path."""

from __future__ import annotations

import storage.sql.rows as common
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

ROWS = common.Rows(POSTGRES)
utc, opt_utc = POSTGRES.ts, POSTGRES.opt_ts
reading_row, reading = ROWS.reading_row, ROWS.reading
balance_row, balance = ROWS.balance_row, ROWS.balance
meter_row, meter = ROWS.meter_row, ROWS.meter
event_row, event = ROWS.event_row, ROWS.event
deadletter_row, deadletter = ROWS.deadletter_row, ROWS.deadletter
command_row, command = ROWS.command_row, ROWS.command
