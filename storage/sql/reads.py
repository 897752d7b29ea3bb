"""Special reads in both stores (storage.sql's Dialect): the record of each, by correlation id, and
the ones of a meter in a window (exports give their readings the reason)."""

from __future__ import annotations

from datetime import datetime

from gateway.model.reads import OPEN_STATES, ReadState, SpecialRead
from storage.sql.conn import SqlBase

_COLS = "correlation_id, meter_id, doc"


class SqlReads(SqlBase):
    async def save_special_read(self, read: SpecialRead) -> None:
        """Insert or update by correlation id."""
        d = self.dialect
        async with self._tx(f"save special read {read.correlation_id}") as c:
            await c.execute(
                "INSERT INTO special_reads (correlation_id, meter_id, requested_at, read_ts, state, doc)"
                " VALUES (:c, :m, :at, :ts, :state, :doc) ON CONFLICT (correlation_id) DO UPDATE SET"
                " read_ts = EXCLUDED.read_ts, state = EXCLUDED.state, doc = EXCLUDED.doc",
                {"c": read.correlation_id, "m": read.meter_id, "at": d.ts(read.requested_at), "ts": d.opt_ts(read.ts),
                 "state": read.state.value, "doc": read.doc()})

    async def get_special_read(self, correlation_id: str) -> SpecialRead | None:
        found = await self._select(f"special read {correlation_id}",
                                   f"SELECT {_COLS} FROM special_reads WHERE correlation_id = :c", {"c": correlation_id})
        return SpecialRead.from_doc(*found[0]) if found else None

    async def open_special_reads(self, meter_id: str) -> list[SpecialRead]:
        """The meter's special reads still queued or in progress."""
        found = await self._select(
            f"open special reads of {meter_id}",
            f"SELECT {_COLS} FROM special_reads WHERE meter_id = :m AND state IN ('queued', 'in_progress')",
            {"m": meter_id})
        return [r for r in (SpecialRead.from_doc(*row) for row in found) if r.state in OPEN_STATES]

    async def special_reads(self, meter_id: str, *, start: datetime, end: datetime) -> list[SpecialRead]:
        """The meter's completed or partial special reads whose readings lie in [start, end), by time."""
        d = self.dialect
        found = await self._select(
            f"special reads of {meter_id}",
            f"SELECT {_COLS} FROM special_reads WHERE meter_id = :m AND read_ts >= :s AND read_ts < :e"
            " AND state IN (:done, :partial) ORDER BY read_ts",
            {"m": meter_id, "s": d.ts(start), "e": d.ts(end), "done": ReadState.COMPLETED.value,
             "partial": ReadState.PARTIAL.value})
        return [SpecialRead.from_doc(*row) for row in found]
