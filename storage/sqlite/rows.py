"""The shared row codec (storage.sql.rows) with SQLite's encodings, under the names the
embedded store's write path uses: times as integer microseconds, money as decimal text."""

from __future__ import annotations

from storage.sql import rows as shared
from storage.sql.dialect import SQLITE

READING_IN, READING_COLS, BALANCE_IN, BALANCE_COLS = (shared.READING_IN, shared.READING_COLS, shared.BALANCE_IN,
                                                      shared.BALANCE_COLS)
METER_COLS, EVENT_COLS, DEADLETTER_COLS, COMMAND_COLS = (shared.METER_COLS, shared.EVENT_COLS, shared.DEADLETTER_COLS,
                                                         shared.COMMAND_COLS)
ROWS = shared.Rows(SQLITE)
us, opt_us, dt, opt_dt = SQLITE.ts, SQLITE.opt_ts, SQLITE.dt, SQLITE.opt_dt
reading_row, reading, balance_row, balance = ROWS.reading_row, ROWS.reading, ROWS.balance_row, ROWS.balance
meter_row, meter, event_row, event = ROWS.meter_row, ROWS.meter, ROWS.event_row, ROWS.event
deadletter_row, deadletter, command_row, command = ROWS.deadletter_row, ROWS.deadletter, ROWS.command_row, ROWS.command
