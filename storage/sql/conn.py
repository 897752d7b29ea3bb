"""One connection as the shared SQL sees it, whatever the driver: statements with `:name`
parameters in, rows and row counts out. A thin adapter per backend; the stores map the
drivers' errors once, around these (`_tx` and `_read`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import aiosqlite
import psycopg

from storage.consumption import ConsumptionQueries
from storage.sql.dialect import POSTGRES, Dialect
from storage.sql.rows import Rows

#: Named (`:name`) or, for a statement run with many rows, positional (`?`).
Params = Mapping[str, Any] | Sequence[Any]


class Conn(Protocol):
    async def fetch(self, sql: str, params: Params | None = None) -> list[Any]: ...

    async def one(self, sql: str, params: Params | None = None) -> Any | None:
        """The first row, or None."""

    async def execute(self, sql: str, params: Params | None = None) -> int:
        """The statement's row count."""

    async def executemany(self, sql: str, params: Iterable[Params]) -> int: ...


class SqliteConn:
    """aiosqlite takes `:name` parameters as they are."""

    __slots__ = ("_db",)

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params or {}))

    async def one(self, sql: str, params: Params | None = None) -> Any | None:
        return next(iter(await self._db.execute_fetchall(sql, params or {})), None)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        cur = await self._db.execute(sql, params or {})
        return cur.rowcount

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        cur = await self._db.executemany(sql, params)
        return cur.rowcount


class PgConn:
    """psycopg, with the shared SQL's parameters turned into `%(name)s` (cached per text)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        cur = await self._conn.execute(POSTGRES.sql(sql), params or {})
        return await cur.fetchall()

    async def one(self, sql: str, params: Params | None = None) -> Any | None:
        cur = await self._conn.execute(POSTGRES.sql(sql), params or {})
        return await cur.fetchone()

    async def execute(self, sql: str, params: Params | None = None) -> int:
        cur = await self._conn.execute(POSTGRES.sql(sql), params or {})
        return cur.rowcount

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        cur = self._conn.cursor()
        await cur.executemany(POSTGRES.sql(sql), params)
        return cur.rowcount


class SqlBase(ConsumptionQueries):
    """What the shared mixins need of a store; each backend's store fills it in."""

    dialect: ClassVar[Dialect]
    rows: ClassVar[Rows]

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    def _tx(self, action: str) -> AbstractAsyncContextManager[Conn]:
        """One write transaction (the writer lock | a pooled connection), errors mapped."""
        raise NotImplementedError

    def _read(self, action: str) -> AbstractAsyncContextManager[Conn]:
        """A connection for one read statement, errors mapped."""
        raise NotImplementedError

    def _seen(self, v: Any) -> datetime | None:
        """A meter's newest ts as the engine's activity SQL gives it (None: nothing since)."""
        return self.dialect.opt_dt(v)

    async def _select(self, action: str, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """One read statement (a store may take a shorter way than `_read`)."""
        async with self._read(action) as c:
            return await c.fetch(sql, params)

    async def _select_range(self, action: str, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """A read over a time range of readings (the PostgreSQL store plans these generically)."""
        return await self._select(action, sql, params)
