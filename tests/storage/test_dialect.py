"""The shared SQL's one spelling, as each driver takes it (storage/sql/dialect.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from storage.sql.dialect import POSTGRES, SQLITE


def test_postgres_takes_named_and_positional_parameters_and_leaves_casts_and_percent_alone() -> None:
    sql = "SELECT x FROM unnest(:ids::text[]) AS i WHERE a = :a AND b LIKE '%' || ? AND c = :a"
    assert POSTGRES.sql(sql) == (
        "SELECT x FROM unnest(%(ids)s::text[]) AS i WHERE a = %(a)s AND b LIKE '%%' || %s AND c = %(a)s")
    assert SQLITE.sql(sql) == sql


def test_times_round_trip_in_utc_on_both() -> None:
    t = datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    for d in (SQLITE, POSTGRES):
        back = d.dt(d.ts(t))
        assert back == t
        assert back.tzinfo is UTC
        assert d.opt_dt(d.opt_ts(None)) is None
    # A naive time is UTC (the model's rule).
    assert SQLITE.ts(datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000
    assert POSTGRES.ts(datetime(1970, 1, 1)) == datetime(1970, 1, 1, tzinfo=UTC)


def test_money_is_exact_on_both() -> None:
    assert SQLITE.money(Decimal("12.30")) == "12.30"
    assert POSTGRES.money(Decimal("12.30")) == Decimal("12.30")
    assert SQLITE.money(None) is None


def test_a_table_of_values_names_its_columns() -> None:
    rows = [("electricity", "A1"), ("gas", "B2")]
    from_item, params = SQLITE.table("d", (("utility", "text"), ("device_number", "text")), rows)
    with sqlite3.connect(":memory:") as con:
        assert con.execute(f"SELECT d.utility, d.device_number FROM {from_item}", params).fetchall() == rows
    from_item, params = POSTGRES.table("d", (("utility", "text"), ("device_number", "text")), rows)
    assert from_item == "unnest(:d_0::text[], :d_1::text[]) AS d(utility, device_number)"
    assert params == {"d_0": ["electricity", "gas"], "d_1": ["A1", "B2"]}
