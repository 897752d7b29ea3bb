"""The read side both stores share (the API's keyed queries and pages) and the PAYG commands,
as a mixin written once over storage.sql's Dialect.

What each engine tunes stays with it (storage/sqlite/queries.py, storage/timescale/queries.py):
the latest readings, the last cumulative values, the change feed and the consumption probes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.errors import InvalidRequest, NotFound
from gateway.model import (
    BalanceUpdate,
    Channel,
    Command,
    CommandStatus,
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
from storage.records import ReadingOrigin, StatusChange
from storage.rows import STATUS, converted
from storage.sql.conn import SqlBase
from storage.sql.rows import BALANCE_COLS, COMMAND_COLS, DEADLETTER_COLS, EVENT_COLS, METER_COLS, READING_COLS

#: A verification log row as StatusChange reads it (SqlQueries._change).
_LOG_COLS = ("v.id, v.created_at, v.previous_status, v.status, v.note, v.actor, v.key_id, v.action,"
             " v.previous_value, v.value, v.rule, v.recorded_at")


class SqlQueries(SqlBase):
    """Reader methods and commands."""

    async def list_meters(self, *, search: str | None = None, limit: int = 100, after: str | None = None,
                          status: MeterStatus | None = None, utility: Utility | None = None,
                          payg: bool | None = None, consumer_number: str | None = None) -> list[Meter]:  # fmt: skip
        """Meters by meter_id after `after`; `search` is a case-insensitive substring of the
        meter number, device number or consumer number (ASCII case folding on SQLite); the
        other filters are exact."""
        clause, params = _filters(status=None if status is None else status.value,
                                  utility=None if utility is None else utility.value, consumer_number=consumer_number)
        where = [clause]
        params["limit"] = limit
        if payg is not None:
            where.append("payg = :payg")
            params["payg"] = payg
        if after is not None:
            where.append("meter_id > :after")
            params["after"] = after
        if search:
            like = f"{self.dialect.ilike} :p ESCAPE '\\'"
            where.append(f"(meter_id {like} OR device_number {like} OR consumer_number {like})")
            params["p"] = _like(search)
        found = await self._select(
            "list meters",
            f"SELECT {METER_COLS} FROM meters WHERE {' AND '.join(where)} ORDER BY meter_id LIMIT :limit", params)
        return [self.rows.meter(r) for r in found]

    async def get_meter(self, meter_id: str) -> Meter | None:
        """The meter with this meter_id, or None."""
        found = await self._select(f"get meter {meter_id}", f"SELECT {METER_COLS} FROM meters WHERE meter_id = :m",
                                   {"m": meter_id})
        return self.rows.meter(found[0]) if found else None

    async def reading_history(self, meter_id: str, channel: Channel, ts: datetime, *, limit: int = 100,
                              after: int | None = None) -> list[StatusChange]:
        """The reading's audit trail from the verification log (verdicts, edits, replaced estimates),
        oldest first. NotFound if there is no such reading."""
        found = await self._select(
            f"history of a reading of {meter_id}",
            f"SELECT {_LOG_COLS} FROM readings AS r"
            " LEFT JOIN verification_log AS v ON v.meter_id = r.meter_id AND v.channel = r.channel AND v.ts = r.ts"
            " AND v.id > :after WHERE r.meter_id = :m AND r.channel = :ch AND r.ts = :ts ORDER BY v.id LIMIT :limit",
            {"after": after or 0, "m": meter_id, "ch": channel.value, "ts": self.dialect.ts(ts), "limit": limit})
        if not found:
            raise NotFound("reading", f"{meter_id}/{channel.value}@{ts.isoformat()}")
        return [self._change(r) for r in found if r[0] is not None]

    async def reading_origin(self, meter_id: str, channel: Channel, ts: datetime) -> ReadingOrigin:
        """The reading now, and its value and status as first recorded: those the trail's first
        change replaced (the reading's own while nothing changed). NotFound if there is no such reading."""
        key = {"m": meter_id, "ch": channel.value, "ts": self.dialect.ts(ts)}
        found = await self._select(
            f"origin of a reading of {meter_id}",
            f"SELECT {', '.join('r.' + c.strip() for c in READING_COLS.split(','))},"
            " (SELECT v.previous_status FROM verification_log AS v WHERE v.meter_id = r.meter_id"
            " AND v.channel = r.channel AND v.ts = r.ts ORDER BY v.id LIMIT 1)"
            " FROM readings AS r WHERE r.meter_id = :m AND r.channel = :ch AND r.ts = :ts", key)
        if not found:
            raise NotFound("reading", f"{meter_id}/{channel.value}@{ts.isoformat()}")
        reading = self.rows.reading(found[0][:-1])
        status = STATUS.get(found[0][-1]) or reading.status
        changed = await self._select(
            f"first change of a reading of {meter_id}",
            f"SELECT {_LOG_COLS} FROM verification_log AS v WHERE v.meter_id = :m AND v.channel = :ch"
            " AND v.ts = :ts AND v.previous_value IS NOT NULL ORDER BY v.id LIMIT 1", key)
        if not changed:
            return ReadingOrigin(reading, reading.value, status)
        first = self._change(changed[0])
        assert first.previous_value is not None  # selected so
        return ReadingOrigin(reading, first.previous_value, status, first)

    def _change(self, r: Any) -> StatusChange:
        d = self.dialect
        return StatusChange(r[0], d.dt(r[1]), STATUS.get(r[2]), STATUS[r[3]], r[4], r[5], r[6], r[7],
                            _opt_float(r[8]), _opt_float(r[9]), r[10], d.opt_dt(r[11]))

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None,
                       status: Status | None = None) -> list[Reading]:  # fmt: skip
        """Readings with start <= ts < end ordered by (ts, channel), keyset-paginated."""
        d = self.dialect
        where = ["meter_id = :m", "ts >= :start", "ts < :end"]
        params: dict[str, Any] = {"m": meter_id, "start": d.ts(start), "end": d.ts(end), "limit": limit}
        if channel is not None:
            where.append("channel = :ch")
            params["ch"] = channel.value
        if status is not None:
            where.append("status = :status")
            params["status"] = status.value
        if after is not None:
            where.append("(ts, channel) > (:after_ts, :after_ch)")
            params["after_ts"], params["after_ch"] = d.ts(after[0]), str(after[1])
        found = await self._select_range(
            f"readings of {meter_id}",
            f"SELECT {READING_COLS} FROM readings WHERE {' AND '.join(where)} ORDER BY ts, channel LIMIT :limit",
            params)
        return await converted(found, self.rows.reading)

    async def latest_balance(self, meter_id: str) -> BalanceUpdate | None:
        """The newest balance update of the meter (by ts), or None."""
        found = await self._select(
            f"latest balance of {meter_id}",
            f"SELECT {BALANCE_COLS} FROM balances WHERE meter_id = :m ORDER BY ts DESC LIMIT 1", {"m": meter_id})
        return self.rows.balance(found[0]) if found else None

    async def balances(self, meter_id: str, *, start: datetime, end: datetime,
                       limit: int = 1000) -> list[BalanceUpdate]:  # fmt: skip
        """Balance updates with start <= ts < end, ordered by ts."""
        found = await self._select(
            f"balances of {meter_id}",
            f"SELECT {BALANCE_COLS} FROM balances WHERE meter_id = :m AND ts >= :start AND ts < :end"
            " ORDER BY ts LIMIT :limit",
            {"m": meter_id, "start": self.dialect.ts(start), "end": self.dialect.ts(end), "limit": limit})
        return [self.rows.balance(r) for r in found]

    async def events(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                     limit: int = 100) -> list[Event]:  # fmt: skip
        """Events, most recent first."""
        where, params = _filters(meter_id=meter_id, kind=None if kind is None else kind.value)
        found = await self._select(
            "events", f"SELECT {EVENT_COLS} FROM events WHERE {where} ORDER BY ts DESC, seq DESC LIMIT :limit",
            {**params, "limit": limit})
        return [self.rows.event(r) for r in found]

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> list[DeadLetter]:  # fmt: skip
        """Dead letters, most recent first."""
        where, params = _filters(meter_id=meter_id, reason=reason)
        found = await self._select(
            "dead letters",
            f"SELECT {DEADLETTER_COLS} FROM deadletters WHERE {where} ORDER BY ts DESC, seq DESC LIMIT :limit",
            {**params, "limit": limit})
        return [self.rows.deadletter(r) for r in found]

    async def cumulative_history(self, *, since: datetime) -> list[Reading]:
        """Cumulative readings with ts >= since ordered by (meter_id, channel, ts)."""
        found = await self._select(
            "cumulative history",
            f"SELECT {READING_COLS} FROM readings WHERE ts >= :since AND kind = :kind ORDER BY meter_id, channel, ts",
            {"since": self.dialect.ts(since), "kind": Kind.CUMULATIVE.value})
        return [self.rows.reading(r) for r in found]

    # -- commands -------------------------------------------------------------------
    async def get_command(self, correlation_id: str) -> Command | None:
        found = await self._select(f"command {correlation_id}",
                                   f"SELECT {COMMAND_COLS} FROM commands WHERE correlation_id = :c",
                                   {"c": correlation_id})
        return self.rows.command(found[0]) if found else None

    async def commands(self, *, meter_id: str | None = None, limit: int = 100,
                       before: tuple[datetime, str] | None = None) -> list[Command]:
        """Commands, most recent first; `before`: the (created_at, correlation_id) of the last of the previous page."""
        where, params = _filters(meter_id=meter_id)
        if before is not None:
            where += " AND (created_at, correlation_id) < (:b_at, :b_id)"
            params = {**params, "b_at": self.dialect.ts(before[0]), "b_id": before[1]}
        found = await self._select(
            "commands",
            f"SELECT {COMMAND_COLS} FROM commands WHERE {where} ORDER BY created_at DESC, correlation_id DESC"
            " LIMIT :limit", {**params, "limit": limit})
        return [self.rows.command(r) for r in found]

    async def save_command(self, command: Command) -> None:
        """Insert or update a PAYG command by correlation_id (created_at and its keys are kept)."""
        async with self._tx(f"save command {command.correlation_id}") as c:
            await c.execute(
                f"INSERT INTO commands ({COMMAND_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (correlation_id) DO UPDATE SET meter_id = EXCLUDED.meter_id, kind = EXCLUDED.kind,"
                " status = EXCLUDED.status, amount = EXCLUDED.amount, reference = EXCLUDED.reference,"
                " updated_at = EXCLUDED.updated_at, detail = EXCLUDED.detail, unsent = EXCLUDED.unsent",
                self.rows.command_row(command))

    async def claim_command(self, command: Command) -> list[Command]:
        """Store a new PENDING command under its keys (reference, idempotency key), or, if another
        command holds one of them, store nothing and return the commands that hold them.

        A claim racing another of the same key (on PostgreSQL: this gateway or another sharing
        the database) waits at the INSERT until the first commits, then finds its row (READ
        COMMITTED: the SELECT is a new statement, so it sees the commit)."""
        async with self._tx(f"claim command {command.correlation_id}") as c:
            inserted = await c.fetch(
                f"INSERT INTO commands ({COMMAND_COLS}, reference_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING correlation_id",
                (*self.rows.command_row(command), command.reference))
            if inserted:
                return []
            held = await c.fetch(
                f"SELECT {COMMAND_COLS} FROM commands WHERE reference_key = :r OR idempotency_key = :k"
                " ORDER BY reference_key IS NULL, created_at", {"r": command.reference, "k": command.idempotency_key})
        if not held:
            msg = f"claim command {command.correlation_id}: the correlation id is already taken"
            raise InvalidRequest(msg)
        return [self.rows.command(r) for r in held]

    async def retry_unsent_command(self, correlation_id: str, at: datetime) -> Command | None:
        """PENDING again (updated at `at`) if it is FAILED and unsent; None otherwise (another
        request sent it again first, or it may have reached the broker). Concurrent calls: the
        row lock (SQLite: the writer lock) makes the second see the first's PENDING."""
        async with self._tx(f"retry command {correlation_id}") as c:
            found = await c.one(
                "UPDATE commands SET status = :pending, unsent = false, updated_at = :at, detail = NULL"
                f" WHERE correlation_id = :c AND status = :failed AND unsent RETURNING {COMMAND_COLS}",
                {"pending": CommandStatus.PENDING.value, "at": self.dialect.ts(at), "c": correlation_id,
                 "failed": CommandStatus.FAILED.value})
        return None if found is None else self.rows.command(found)


def _like(search: str) -> str:
    """A LIKE pattern matching `search` anywhere, with its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters(**equal: str | None) -> tuple[str, dict[str, Any]]:
    """A WHERE clause of `column = :column` for every filter that is set (names are ours)."""
    used = {col: value for col, value in equal.items() if value is not None}
    return " AND ".join(f"{col} = :{col}" for col in used) or "true", used


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)
