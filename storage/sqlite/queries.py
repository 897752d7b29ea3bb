"""The read side of the embedded store (the API's queries), as a mixin of SqliteStore.

Each query is one statement on the reader connection, so it sees one consistent snapshot
(WAL) and never a half-written batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from gateway.errors import NotFound
from gateway.model import (
    BalanceUpdate,
    Channel,
    Command,
    DeadLetter,
    Event,
    EventKind,
    Kind,
    Meter,
    MeterStatus,
    Reading,
    Status,
    Utility,
)
from storage import boundary
from storage import consumption as cons
from storage.records import FeedPage, LastValue, StatusChange
from storage.rows import CHANNEL, STATUS, converted
from storage.sqlite import rows

_ALL_CHANNELS = json.dumps([c.value for c in Channel])
_NCOLS = len(rows.READING_COLS.split(","))
_NULLS = ", ".join(["NULL"] * _NCOLS)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in rows.READING_COLS.split(","))


_BILLABLE = ", ".join(f"'{s.value}'" for s in boundary.BILLABLE)
# The last billable read at or before `t` (an index probe on (meter_id, channel, ts)).
_LAST = ("SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts <= {t}"
         f" AND p.status IN ({_BILLABLE}) ORDER BY p.ts DESC LIMIT 1")
# Part 0: for each probe time, its last billable read and, only where that is an estimate
# (SQLite runs a CASE branch's subquery only when it is taken), the last real one within
# the window before the time. Part 3: the first billable read after the first time.
_PROBES = f"""
SELECT 0, b.key, {_cols("r")}, {_cols("q")} FROM json_each(:times) AS b
LEFT JOIN readings AS r ON r.seq = ({_LAST.format(t="b.value")})
LEFT JOIN readings AS q ON q.seq = CASE WHEN {boundary.estimate_sql("r")} THEN (
    SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts <= b.value
      AND p.ts >= b.value - :w AND {boundary.real_sql("p")} ORDER BY p.ts DESC LIMIT 1) END
UNION ALL
SELECT 3, NULL, {_cols("f")}, {_NULLS} FROM readings AS f WHERE f.seq = (
    SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts > :lo AND p.ts <= :hi
      AND p.status IN ({_BILLABLE}) ORDER BY p.ts LIMIT 1)"""
# Part 1: the flagged reads from the window before the first time's read to :until (the
# partial index). One statement with the parts above, so all come from the same snapshot.
_FLAGGED = f"""
UNION ALL
SELECT 1, NULL, {rows.READING_COLS}, {_NULLS} FROM readings
WHERE meter_id = :m AND channel = :ch AND ts <= :until AND {cons.FLAGGED_SQL}
  AND ts >= min(coalesce((SELECT p.ts FROM readings AS p WHERE p.seq = ({_LAST.format(t=":lo")})), :lo), :lo - :w)"""
_ORDER = " ORDER BY 1, 2, 6"


class SqliteQueries(cons.ConsumptionQueries):
    """Reader methods; the store provides `_fetch` (on its read-only connection)."""

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def list_meters(self, *, search: str | None = None, limit: int = 100, after: str | None = None,
                          status: MeterStatus | None = None, utility: Utility | None = None,
                          payg: bool | None = None, consumer_number: str | None = None) -> list[Meter]:  # fmt: skip
        """Meters by meter_id after `after`; `search` is a case-insensitive substring of the
        meter number, device number or consumer number (ASCII case folding)."""
        clause, params = _filters(status=None if status is None else status.value,
                                  utility=None if utility is None else utility.value, consumer_number=consumer_number)
        where = [clause]
        if payg is not None:
            where.append("payg = ?")
            params.append(int(payg))
        if after is not None:
            where.append("meter_id > ?")
            params.append(after)
        if search:
            where.append(
                "(meter_id LIKE ? ESCAPE '\\' OR device_number LIKE ? ESCAPE '\\'"
                " OR consumer_number LIKE ? ESCAPE '\\')"
            )
            params += [_like(search)] * 3
        found = await self._fetch(
            "list meters",
            f"SELECT {rows.METER_COLS} FROM meters WHERE {' AND '.join(where)} ORDER BY meter_id LIMIT ?",
            [*params, limit],
        )
        return [rows.meter(r) for r in found]

    async def get_meter(self, meter_id: str) -> Meter | None:
        """The meter with this meter_id, or None."""
        found = await self._fetch(
            f"get meter {meter_id}", f"SELECT {rows.METER_COLS} FROM meters WHERE meter_id = ?", [meter_id]
        )
        return rows.meter(found[0]) if found else None

    async def reading_history(self, meter_id: str, channel: Channel, ts: datetime, *, limit: int = 100,
                              after: int | None = None) -> list[StatusChange]:
        """The reading's verdicts from the verification log, oldest first. NotFound if there is no such reading."""
        found = await self._fetch(
            f"history of a reading of {meter_id}",
            "SELECT v.id, v.created_at, v.previous_status, v.status, v.note, v.actor, v.key_id FROM readings AS r"
            " LEFT JOIN verification_log AS v ON v.meter_id = r.meter_id AND v.channel = r.channel AND v.ts = r.ts"
            " AND v.id > ? WHERE r.meter_id = ? AND r.channel = ? AND r.ts = ? ORDER BY v.id LIMIT ?",
            [after or 0, meter_id, channel.value, rows.us(ts), limit])
        if not found:
            raise NotFound("reading", f"{meter_id}/{channel.value}@{ts.isoformat()}")
        return [StatusChange(r[0], rows.dt(r[1]), STATUS.get(r[2]), STATUS[r[3]], r[4], r[5], r[6])
                for r in found if r[0] is not None]

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel, ordered by channel: one index probe per
        canonical channel, never a scan of the meter's history."""
        found = await self._fetch(
            f"latest readings of {meter_id}",
            f"SELECT {rows.READING_COLS} FROM readings WHERE seq IN ("
            " SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = ? AND r.channel = c.value"
            "         ORDER BY r.ts DESC LIMIT 1)"
            " FROM json_each(?) AS c) ORDER BY channel",
            [meter_id, _ALL_CHANNELS],
        )
        return [rows.reading(r) for r in found]

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None,
                       status: Status | None = None) -> list[Reading]:  # fmt: skip
        """Readings with start <= ts < end ordered by (ts, channel), keyset-paginated."""
        where = ["meter_id = ?", "ts >= ?", "ts < ?"]
        params: list[Any] = [meter_id, rows.us(start), rows.us(end)]
        if channel is not None:
            where.append("channel = ?")
            params.append(channel.value)
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if after is not None:
            where.append("(ts, channel) > (?, ?)")
            params += [rows.us(after[0]), str(after[1])]
        found = await self._fetch(
            f"readings of {meter_id}",
            f"SELECT {rows.READING_COLS} FROM readings WHERE {' AND '.join(where)} ORDER BY ts, channel LIMIT ?",
            [*params, limit],
        )
        return await converted(found, rows.reading)

    async def last_cumulative(self) -> list[LastValue]:
        """The latest reading of every (meter, channel) whose latest reading is cumulative.

        Walks the distinct meters with index seeks (a loose index scan) and probes each
        channel's newest row, so the cost grows with meters, not with history.
        """
        found = await self._fetch(
            "last cumulative values",
            "WITH RECURSIVE m(meter_id) AS ("
            " SELECT min(meter_id) FROM readings"
            " UNION ALL"
            " SELECT (SELECT min(r.meter_id) FROM readings AS r WHERE r.meter_id > m.meter_id)"
            " FROM m WHERE m.meter_id IS NOT NULL)"
            " SELECT meter_id, channel, ts, value FROM readings WHERE seq IN ("
            "  SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = m.meter_id"
            "          AND r.channel = c.value ORDER BY r.ts DESC LIMIT 1)"
            "  FROM m, json_each(?) AS c WHERE m.meter_id IS NOT NULL)"
            " AND kind = ? ORDER BY meter_id, channel",
            [_ALL_CHANNELS, Kind.CUMULATIVE.value],
        )
        return [LastValue(r[0], CHANNEL[r[1]], rows.dt(r[2]), r[3]) for r in found]

    async def latest_balance(self, meter_id: str) -> BalanceUpdate | None:
        """The newest balance update of the meter (by ts), or None."""
        found = await self._fetch(
            f"latest balance of {meter_id}",
            f"SELECT {rows.BALANCE_COLS} FROM balances WHERE meter_id = ? ORDER BY ts DESC LIMIT 1",
            [meter_id],
        )
        return rows.balance(found[0]) if found else None

    async def balances(self, meter_id: str, *, start: datetime, end: datetime,
                       limit: int = 1000) -> list[BalanceUpdate]:  # fmt: skip
        """Balance updates with start <= ts < end, ordered by ts."""
        found = await self._fetch(
            f"balances of {meter_id}",
            f"SELECT {rows.BALANCE_COLS} FROM balances WHERE meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            [meter_id, rows.us(start), rows.us(end), limit],
        )
        return [rows.balance(r) for r in found]

    async def events(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                     limit: int = 100) -> list[Event]:  # fmt: skip
        """Events, most recent first."""
        where, params = _filters(meter_id=meter_id, kind=None if kind is None else kind.value)
        found = await self._fetch(
            "events",
            f"SELECT {rows.EVENT_COLS} FROM events WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?",
            [*params, limit],
        )
        return [rows.event(r) for r in found]

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> list[DeadLetter]:  # fmt: skip
        """Dead letters, most recent first."""
        where, params = _filters(meter_id=meter_id, reason=reason)
        found = await self._fetch(
            "dead letters",
            f"SELECT {rows.DEADLETTER_COLS} FROM deadletters WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?",
            [*params, limit],
        )
        return [rows.deadletter(r) for r in found]

    # -- wave 2 -------------------------------------------------------------------
    async def feed(self, *, after: int, limit: int = 1000) -> FeedPage:
        """Readings with seq > after in seq order. SQLite has one writer at a time and
        seq is taken inside its write transaction, so commit order is seq order: every
        committed seq is final and the feed can never skip one."""
        found = await self._fetch(
            "feed", f"SELECT {rows.READING_COLS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", [after, limit]
        )
        items = await converted(found, rows.reading)
        return FeedPage(items, items[-1].seq if items and items[-1].seq is not None else after)

    async def _probe(self, meter_id: str, channel: Channel, times: list[datetime], *,
                     flagged_until: datetime | None) -> boundary.Probes:  # fmt: skip
        micros = [rows.us(t) for t in times]
        found = await self._fetch(
            f"consumption of {meter_id}",
            _PROBES + (_FLAGGED if flagged_until is not None else "") + _ORDER,
            {"times": json.dumps(micros), "m": meter_id, "ch": channel.value, "lo": micros[0], "hi": micros[-1],
             "w": self.estimate_window // timedelta(microseconds=1),
             **({"until": rows.us(flagged_until)} if flagged_until is not None else {})},
        )  # fmt: skip
        last: list[Reading | None] = []
        real: dict[int, Reading] = {}
        flagged: list[Reading] = []
        first_after = None
        for row in found:
            if row[0] == 0:
                last.append(None if row[2] is None else rows.reading(row[2:2 + _NCOLS]))
                if row[2 + _NCOLS] is not None:
                    real[row[1]] = rows.reading(row[2 + _NCOLS:])
            elif row[0] == 1:
                flagged.append(rows.reading(row[2:2 + _NCOLS]))
            else:
                first_after = rows.reading(row[2:2 + _NCOLS])
        return boundary.Probes(last, real, first_after if last[0] is None else None, flagged)

    async def cumulative_history(self, *, since: datetime) -> list[Reading]:
        """Cumulative readings with ts >= since ordered by (meter_id, channel, ts)."""
        found = await self._fetch(
            "cumulative history",
            f"SELECT {rows.READING_COLS} FROM readings WHERE ts >= ? AND kind = ? ORDER BY meter_id, channel, ts",
            [rows.us(since), Kind.CUMULATIVE.value],
        )
        return [rows.reading(r) for r in found]

    async def get_command(self, correlation_id: str) -> Command | None:
        found = await self._fetch(
            f"command {correlation_id}",
            f"SELECT {rows.COMMAND_COLS} FROM commands WHERE correlation_id = ?",
            [correlation_id],
        )
        return rows.command(found[0]) if found else None

    async def commands(self, *, meter_id: str | None = None, limit: int = 100,
                       before: tuple[datetime, str] | None = None) -> list[Command]:
        """Commands, most recent first; `before`: the (created_at, correlation_id) of the last of the previous page."""
        where, params = _filters(meter_id=meter_id)
        if before is not None:
            where += " AND (created_at, correlation_id) < (?, ?)"
            params += [rows.us(before[0]), before[1]]
        found = await self._fetch(
            "commands",
            f"SELECT {rows.COMMAND_COLS} FROM commands WHERE {where}"
            " ORDER BY created_at DESC, correlation_id DESC LIMIT ?",
            [*params, limit],
        )
        return [rows.command(r) for r in found]


def _like(search: str) -> str:
    """A LIKE pattern matching `search` anywhere, with its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters(**equal: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause of `column = ?` for every filter that is set (names are ours)."""
    used = {col: value for col, value in equal.items() if value is not None}
    clause = " AND ".join(f"{col} = ?" for col in used) or "1"
    return clause, list(used.values())
