"""What differs between the two databases under the shared SQL, and nothing else.

Shared SQL (storage/sql/) is written once with `:name` parameters, the style sqlite3 takes
as it is; `Dialect.sql` turns it into psycopg's `%(name)s`. Values cross through the hooks:
SQLite keeps times as integer microseconds since the epoch (UTC), money as exact decimal
text and JSON as text; PostgreSQL takes aware datetimes, numeric and jsonb.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

import psycopg
from psycopg.types.json import Jsonb

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
# `:name` (and positional `?`) but not a cast (`::text`) nor a JSON path (`->> 1`); names are ours, never user text.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Dialect(Protocol):
    #: "sqlite" | "postgres"
    name: str
    #: Appended to a SELECT that reads a row the transaction is about to change ("" | " FOR UPDATE").
    for_update: str
    #: The driver's error for a unique index that refused a write.
    unique_violation: tuple[type[Exception], ...]
    #: `greatest` of two values (SQLite's scalar max()).
    greatest: str
    #: Case-insensitive LIKE with backslash escapes.
    ilike: str
    #: Null-safe equality and inequality ("IS" | "IS NOT DISTINCT FROM", "IS NOT" | "IS DISTINCT FROM").
    same: str
    differs: str

    def sql(self, text: str) -> str:
        """Shared SQL with `:name` (or positional `?`) parameters as this driver takes it."""

    def ts(self, t: datetime) -> Any:
        """A time as stored (a naive datetime is UTC, the model's rule)."""

    def opt_ts(self, t: datetime | None) -> Any: ...

    def dt(self, v: Any) -> datetime:
        """A stored time as an aware UTC datetime."""

    def opt_dt(self, v: Any) -> datetime | None: ...

    def money(self, v: Decimal | None) -> Any:
        """An exact amount as stored (text | numeric)."""

    def json(self, v: Mapping[str, Any]) -> Any: ...

    def json_of(self, v: Any) -> dict[str, Any]: ...

    def any_of(self, column: str, param: str) -> str:
        """`column` is one of the strings of parameter `param` (given as `ids(...)`)."""

    def ids(self, values: Sequence[str]) -> Any: ...

    def table(self, param: str, columns: Sequence[tuple[str, str]],
              values: Sequence[Sequence[Any]]) -> tuple[str, dict[str, Any]]:
        """A FROM item of `values` (rows of already encoded values) with these (name, SQL
        type) columns, and the parameters it takes."""

    def serialise(self, key: tuple[int, int]) -> str | None:
        """A statement that makes transactions holding `key` take turns (None: they do already)."""

    def constraint(self, exc: BaseException | None) -> str | None:
        """The unique index that refused a write in `exc` (None: another error, or not known)."""


class _Sqlite:
    name = "sqlite"
    for_update = ""
    unique_violation: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    greatest = "max"
    # LIKE is case-insensitive for ASCII in SQLite; ESCAPE makes the backslash ours.
    ilike = "LIKE"
    same, differs = "IS", "IS NOT"

    def sql(self, text: str) -> str:
        return text

    @staticmethod
    def ts(t: datetime) -> int:
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return (t - EPOCH) // _MICROSECOND

    @staticmethod
    def opt_ts(t: datetime | None) -> int | None:
        return None if t is None else _Sqlite.ts(t)

    @staticmethod
    def dt(v: Any) -> datetime:
        # timedelta(0, 0, v), not timedelta(microseconds=v): positional arguments halve its
        # cost (0.36 against 0.8 µs), and a page of readings converts two a row.
        return EPOCH + timedelta(0, 0, v)

    @staticmethod
    def opt_dt(v: Any) -> datetime | None:
        return None if v is None else EPOCH + timedelta(0, 0, v)

    def money(self, v: Decimal | None) -> str | None:
        return None if v is None else str(v)

    def json(self, v: Mapping[str, Any]) -> str:
        return json.dumps(dict(v), sort_keys=True)

    def json_of(self, v: Any) -> dict[str, Any]:
        return dict(json.loads(v))

    def any_of(self, column: str, param: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(:{param}))"

    def ids(self, values: Sequence[str]) -> str:
        return json.dumps(list(values))

    def table(self, param: str, columns: Sequence[tuple[str, str]],
              values: Sequence[Sequence[Any]]) -> tuple[str, dict[str, Any]]:
        picks = ", ".join(f"j.value ->> {i} AS {name}" for i, (name, _) in enumerate(columns))
        return (f"(SELECT {picks} FROM json_each(:{param}) AS j) AS {param}",
                {param: json.dumps([list(v) for v in values])})

    def serialise(self, key: tuple[int, int]) -> str | None:
        return None  # one writer connection under the store's lock

    def constraint(self, exc: BaseException | None) -> str | None:
        return None  # never raced: the store has one writer


class _Postgres:
    name = "postgres"
    for_update = " FOR UPDATE"
    unique_violation: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)
    greatest = "greatest"
    ilike = "ILIKE"
    same, differs = "IS NOT DISTINCT FROM", "IS DISTINCT FROM"

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def sql(text: str) -> str:
        return _PARAM.sub(r"%(\1)s", text.replace("%", "%%").replace("?", "%s"))

    @staticmethod
    def ts(t: datetime) -> datetime:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)

    @staticmethod
    def opt_ts(t: datetime | None) -> datetime | None:
        return None if t is None else _Postgres.ts(t)

    @staticmethod
    def dt(v: Any) -> datetime:
        # The session time zone is UTC (see timescale/store._configure): values come back in UTC.
        return v if v.tzinfo is UTC else _Postgres.ts(v)

    @staticmethod
    def opt_dt(v: Any) -> datetime | None:
        return v if v is None or v.tzinfo is UTC else _Postgres.ts(v)

    def money(self, v: Decimal | None) -> Decimal | None:
        return v

    def json(self, v: Mapping[str, Any]) -> Jsonb:
        return Jsonb(dict(v))

    def json_of(self, v: Any) -> dict[str, Any]:
        return dict(v)

    def any_of(self, column: str, param: str) -> str:
        # A semi-join with unnest, not `= ANY(...)`: with statistics from when the table was
        # small (a large import runs before autovacuum analyses it), the planner scans the
        # table and searches the array per row.
        return f"{column} IN (SELECT unnest(:{param}::text[]))"

    def ids(self, values: Sequence[str]) -> list[str]:
        return list(values)

    def table(self, param: str, columns: Sequence[tuple[str, str]],
              values: Sequence[Sequence[Any]]) -> tuple[str, dict[str, Any]]:
        arrays = ", ".join(f":{param}_{i}::{kind}[]" for i, (_, kind) in enumerate(columns))
        names = ", ".join(name for name, _ in columns)
        return (f"unnest({arrays}) AS {param}({names})",
                {f"{param}_{i}": [v[i] for v in values] for i in range(len(columns))})

    def serialise(self, key: tuple[int, int]) -> str | None:
        return f"SELECT pg_advisory_xact_lock({key[0]}, {key[1]})"

    def constraint(self, exc: BaseException | None) -> str | None:
        return exc.diag.constraint_name if isinstance(exc, psycopg.errors.UniqueViolation) else None


SQLITE: Final[Dialect] = _Sqlite()
POSTGRES: Final[Dialect] = _Postgres()
