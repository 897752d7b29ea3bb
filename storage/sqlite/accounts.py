"""The account side of the embedded store (API keys, meter registry edits, assignments,
consumers, fleet and PAYG summaries), as a mixin of SqliteStore."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import aiosqlite

from gateway.errors import InvalidRequest, NotFound
from gateway.model import Assignment, Channel, EventKind, Meter, MeterStatus
from storage import accounts, consumption
from storage.base import (
    CONFIG_OWNED_FIELDS,
    UPDATABLE_METER_FIELDS,
    Conflict,
    Consumer,
    MeterActivity,
    PaygTotals,
    StoredEvent,
    cumulative_channel,
)
from storage.keys import ApiKey, format_scopes, parse_scopes
from storage.rows import METER_STATUS, UTILITY
from storage.sqlite import rows

_KEY_COLS = "id, name, hash, scopes, created_at, revoked_at"
# The assignments' opening_read and closing_read columns are no longer written: the reads
# are derived from the readings when an assignment is read (storage.consumption).
_ASSIGNMENT_COLS = "meter_id, consumer_number, start_ts, end_ts"
_METER_PLACEHOLDERS = ", ".join("?" * 14)


def _key(row: Any) -> ApiKey:
    return ApiKey(key_id=row[0], name=row[1], hash=row[2], scopes=parse_scopes(row[3]), created_at=rows.dt(row[4]),
                  revoked_at=rows.opt_dt(row[5]))


def _assignment(row: Any) -> Assignment:
    return Assignment(meter_id=row[0], consumer_number=row[1], start=rows.dt(row[2]), end=rows.opt_dt(row[3]))


def _column(name: str, value: Any) -> Any:
    """A meter field's value as the meters table stores it."""
    if name == "tags":
        return json.dumps(dict(value or {}), sort_keys=True)
    if name == "installed_at":
        return rows.opt_us(value)
    if name == "payg":
        return int(bool(value))
    if name in ("status", "utility", "protocol"):
        return value.value
    return value


class SqliteAccounts(consumption.ConsumptionQueries):
    """Account methods; the store provides `_transaction`, `_fetch` and `_clock`, and its
    queries mixin `_probe` (for the reads of assignments)."""

    def _transaction(self, action: str) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Any]:
        raise NotImplementedError

    # -- API keys -------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey) -> None:
        async with self._transaction(f"create API key {key.key_id}") as db:
            found = await db.execute_fetchall("SELECT 1 FROM api_keys WHERE id = ?", (key.key_id,))
            if found:
                msg = f"API key id {key.key_id} is already taken"
                raise Conflict(msg)
            await db.execute(f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                             (key.key_id, key.name, key.hash, format_scopes(key.scopes), rows.us(key.created_at),
                              rows.opt_us(key.revoked_at)))

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        found = await self._fetch(f"API key {key_id}", f"SELECT {_KEY_COLS} FROM api_keys WHERE id = ?", [key_id])
        return _key(found[0]) if found else None

    async def list_api_keys(self) -> list[ApiKey]:
        found = await self._fetch("API keys", f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")
        return [_key(r) for r in found]

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        async with self._transaction(f"revoke API key {key_id}") as db:
            found = await db.execute_fetchall(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING {_KEY_COLS}",
                (rows.us(at), key_id))
            if not found:
                raise NotFound("API key", key_id)
            return _key(next(iter(found)))

    # -- meters ---------------------------------------------------------------------
    async def create_meters(self, meters: Sequence[Meter], *, at: datetime) -> None:
        if not meters:
            return
        ids = [m.meter_id for m in meters]
        async with self._transaction("create meters") as db:
            found = await db.execute_fetchall(
                "SELECT meter_id FROM meters WHERE meter_id IN (SELECT value FROM json_each(?)) ORDER BY meter_id",
                (json.dumps(ids),))
            taken = [r[0] for r in found] + sorted({i for i in ids if ids.count(i) > 1})
            if taken:
                msg = f"meter(s) {', '.join(taken)} already exist"
                raise Conflict(msg)
            for m in meters:
                await _insert_meter(db, m, at)

    async def update_meter(self, meter_id: str, changes: Mapping[str, Any], *, at: datetime) -> Meter:
        unknown = sorted(set(changes) - UPDATABLE_METER_FIELDS)
        if unknown:
            msg = (f"meter {meter_id}: cannot change {', '.join(unknown)} "
                   f"(changeable: {', '.join(sorted(UPDATABLE_METER_FIELDS))})")
            raise InvalidRequest(msg)
        async with self._transaction(f"update meter {meter_id}") as db:
            if changes.get("installed_at") is not None:
                await _check_installed_at(db, meter_id, changes["installed_at"])
            sets = ", ".join(f"{name} = ?" for name in changes)
            found = await db.execute_fetchall(
                f"UPDATE meters SET {sets + ', ' if sets else ''}updated_at = ? WHERE meter_id = ?"
                f" RETURNING {rows.METER_COLS}",
                (*(_column(n, v) for n, v in changes.items()), rows.us(at), meter_id))
            if not found:
                raise NotFound("meter", meter_id)
            return rows.meter(next(iter(found)))

    async def deactivate_meter(self, meter_id: str, *, at: datetime) -> Meter:
        async with self._transaction(f"deactivate meter {meter_id}") as db:
            await _meter(db, meter_id)  # NotFound
            await _close_open(db, at, "meter_id = ?", meter_id)
            found = await db.execute_fetchall(
                "UPDATE meters SET status = ?, consumer_number = NULL, updated_at = ? WHERE meter_id = ?"
                f" RETURNING {rows.METER_COLS}", (MeterStatus.INACTIVE.value, rows.us(at), meter_id))
            return rows.meter(next(iter(found)))

    async def sync_meters(self, meters: Sequence[tuple[Meter, frozenset[str]]], *, at: datetime) -> None:
        if not meters:
            return
        async with self._transaction("sync configured meters") as db:
            for meter, fields in meters:
                found = await db.execute_fetchall("SELECT 1 FROM meters WHERE meter_id = ?", (meter.meter_id,))
                if not found:
                    await _insert_meter(db, meter, at, lenient=True)
                    continue
                names = sorted(CONFIG_OWNED_FIELDS | (fields & (UPDATABLE_METER_FIELDS - CONFIG_OWNED_FIELDS)))
                await db.execute(
                    f"UPDATE meters SET {', '.join(f'{n} = ?' for n in names)}, updated_at = ? WHERE meter_id = ?",
                    (*(_column(n, getattr(meter, n)) for n in names), rows.us(at), meter.meter_id))
                if "consumer_number" in fields and meter.consumer_number:
                    had = await db.execute_fetchall("SELECT 1 FROM assignments WHERE meter_id = ? LIMIT 1",
                                                    (meter.meter_id,))
                    if not had:
                        await _open_first(db, meter, at, lenient=True)

    # -- assignments and consumers ----------------------------------------------------
    async def assign_meter(self, meter_id: str, consumer_number: str, *, start: datetime,
                           at: datetime) -> Assignment:
        async with self._transaction(f"assign meter {meter_id}") as db:
            meter = await _meter(db, meter_id)
            open_ = await db.execute_fetchall(
                "SELECT consumer_number, start_ts FROM assignments WHERE meter_id = ? AND end_ts IS NULL", (meter_id,))
            last = await db.execute_fetchall("SELECT max(end_ts) FROM assignments WHERE meter_id = ?", (meter_id,))
            accounts.check_assignment(
                meter_id, consumer_number, rows.dt(rows.us(start)), at,
                open_=next((accounts.OpenAssignment(r[0], rows.dt(r[1])) for r in open_), None),
                last_end=rows.opt_dt(next(iter(last))[0]),
                deactivated_at=await _deactivated_at(db, consumer_number), installed_at=meter.installed_at)
            await db.execute("UPDATE assignments SET end_ts = ? WHERE meter_id = ? AND end_ts IS NULL",
                             (rows.us(start), meter_id))
            new = await _open(db, meter_id, consumer_number, start, at)
        [got] = await self._with_reads([(new, cumulative_channel(meter.utility))])
        return got

    async def assignments(self, *, meter_id: str | None = None, consumer_number: str | None = None,
                          reads: bool = True) -> list[Assignment]:
        where: list[str] = ["1"]
        params: list[Any] = []
        for column, value in (("a.meter_id", meter_id), ("a.consumer_number", consumer_number)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        found = await self._fetch("assignments", "SELECT a.meter_id, a.consumer_number, a.start_ts, a.end_ts,"
                                  " m.utility FROM assignments AS a JOIN meters AS m ON m.meter_id = a.meter_id"
                                  f" WHERE {' AND '.join(where)} ORDER BY a.start_ts, a.meter_id, a.id", params)
        if not reads:
            return [_assignment(r) for r in found]
        return await self._with_reads([(_assignment(r), _channel(r[4])) for r in found])

    async def get_consumer(self, consumer_number: str) -> Consumer | None:
        found = await self._fetch(f"consumer {consumer_number}", "SELECT consumer_number, created_at, deactivated_at"
                                  " FROM consumers WHERE consumer_number = ?", [consumer_number])
        if not found:
            return None
        row = found[0]
        return Consumer(row[0], row[2] is None, rows.dt(row[1]), rows.opt_dt(row[2]))

    async def deactivate_consumer(self, consumer_number: str, *, at: datetime) -> Consumer:
        async with self._transaction(f"deactivate consumer {consumer_number}") as db:
            found = await db.execute_fetchall(
                "UPDATE consumers SET deactivated_at = coalesce(deactivated_at, ?) WHERE consumer_number = ?"
                " RETURNING consumer_number, created_at, deactivated_at", (rows.us(at), consumer_number))
            if not found:
                raise NotFound("consumer", consumer_number)
            row = next(iter(found))
            held = await db.execute_fetchall(
                "SELECT meter_id FROM assignments WHERE consumer_number = ? AND end_ts IS NULL", (consumer_number,))
            for (meter_id,) in held:
                await _close_open(db, at, "meter_id = ?", meter_id)
                await db.execute("UPDATE meters SET consumer_number = NULL, updated_at = ? WHERE meter_id = ?",
                                 (rows.us(at), meter_id))
        return Consumer(row[0], False, rows.dt(row[1]), rows.dt(row[2]))

    # -- events, PAYG and fleet summaries ---------------------------------------------
    async def events_page(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                          start: datetime | None = None, end: datetime | None = None, limit: int = 100,
                          before: tuple[datetime, int] | None = None) -> list[StoredEvent]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind.value)
        if start is not None:
            where.append("ts >= ?")
            params.append(rows.us(start))
        if end is not None:
            where.append("ts < ?")
            params.append(rows.us(end))
        if before is not None:
            where.append("(ts, seq) < (?, ?)")
            params += [rows.us(before[0]), before[1]]
        found = await self._fetch("events", f"SELECT seq, {rows.EVENT_COLS} FROM events WHERE {' AND '.join(where)}"
                                  " ORDER BY ts DESC, seq DESC LIMIT ?", [*params, limit])
        return [StoredEvent(r[0], rows.event(r[1:])) for r in found]

    async def payg_totals(self) -> list[PaygTotals]:
        found = await self._fetch(
            "PAYG totals",
            f"SELECT {rows.BALANCE_COLS} FROM balances WHERE seq IN ("
            " SELECT (SELECT b.seq FROM balances AS b WHERE b.meter_id = m.meter_id ORDER BY b.ts DESC LIMIT 1)"
            " FROM meters AS m WHERE m.payg = 1)")
        return accounts.payg_totals(rows.balance(r) for r in found)

    async def meter_activity(self, *, since: datetime) -> list[MeterActivity]:
        found = await self._fetch(
            "meter activity",
            "SELECT m.meter_id, m.status, m.utility, m.payg,"
            " max(coalesce((SELECT max(r.ts) FROM readings AS r WHERE r.meter_id = m.meter_id AND r.ts >= :since), -1),"
            "     coalesce((SELECT max(b.ts) FROM balances AS b WHERE b.meter_id = m.meter_id AND b.ts >= :since), -1))"
            " FROM meters AS m ORDER BY m.meter_id", {"since": rows.us(since)})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], bool(r[3]), None if r[4] < 0 else rows.dt(r[4]))
                for r in found]


# -- inside a write transaction ------------------------------------------------------------
async def _meter(db: aiosqlite.Connection, meter_id: str) -> Meter:
    found = await db.execute_fetchall(f"SELECT {rows.METER_COLS} FROM meters WHERE meter_id = ?", (meter_id,))
    if not found:
        raise NotFound("meter", meter_id)
    return rows.meter(next(iter(found)))


async def _deactivated_at(db: aiosqlite.Connection, consumer_number: str) -> datetime | None:
    found = await db.execute_fetchall("SELECT deactivated_at FROM consumers WHERE consumer_number = ?",
                                      (consumer_number,))
    return next((rows.opt_dt(r[0]) for r in found), None)


def _channel(utility: str) -> Channel:
    """The billing register of a meter of this (stored) utility."""
    return cumulative_channel(UTILITY[utility])


async def _check_installed_at(db: aiosqlite.Connection, meter_id: str, installed_at: datetime) -> None:
    """Conflict if readings or an assignment of the meter lie before `installed_at`."""
    found = await db.execute_fetchall("SELECT count(*), min(ts) FROM readings WHERE meter_id = ? AND ts < ?",
                                      (meter_id, rows.us(installed_at)))
    orphaned, first = next(iter(found))
    assigned = await db.execute_fetchall("SELECT consumer_number, start_ts FROM assignments WHERE meter_id = ?"
                                         " AND start_ts < ? ORDER BY start_ts LIMIT 1",
                                         (meter_id, rows.us(installed_at)))
    accounts.check_installed_at(meter_id, installed_at, orphaned=orphaned, first=rows.opt_dt(first),
                                assigned=next((accounts.OpenAssignment(r[0], rows.dt(r[1])) for r in assigned), None))


async def _close_open(db: aiosqlite.Connection, at: datetime, where: str, *params: Any) -> None:
    await db.execute(f"UPDATE assignments SET end_ts = max(start_ts, ?) WHERE {where} AND end_ts IS NULL",
                     (rows.us(at), *params))


async def _open(db: aiosqlite.Connection, meter_id: str, consumer_number: str, start: datetime,
                at: datetime) -> Assignment:
    await db.execute("INSERT INTO consumers (consumer_number, created_at) VALUES (?, ?)"
                     " ON CONFLICT (consumer_number) DO NOTHING", (consumer_number, rows.us(at)))
    await db.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at) VALUES (?, ?, ?, NULL, ?)",
                     (meter_id, consumer_number, rows.us(start), rows.us(at)))
    await db.execute("UPDATE meters SET consumer_number = ?, updated_at = ? WHERE meter_id = ?",
                     (consumer_number, rows.us(at), meter_id))
    return Assignment(meter_id, consumer_number, rows.dt(rows.us(start)), None)


async def _open_first(db: aiosqlite.Connection, meter: Meter, at: datetime, *, lenient: bool) -> None:
    """The first assignment of a new meter, from its installation (or now)."""
    assert meter.consumer_number is not None
    deactivated = await _deactivated_at(db, meter.consumer_number)
    try:
        if deactivated is not None:
            msg = (f"meter {meter.meter_id}: consumer {meter.consumer_number} was deactivated at "
                   f"{deactivated.isoformat()}")
            raise Conflict(msg)
        start = accounts.first_start(meter.meter_id, meter.installed_at, at)
    except Conflict:
        if not lenient:
            raise
        # The configuration is not the place to argue: the meter stays unassigned (a later
        # start assigns it once the file's consumer can take it).
        await db.execute("UPDATE meters SET consumer_number = NULL WHERE meter_id = ?", (meter.meter_id,))
        return
    await _open(db, meter.meter_id, meter.consumer_number, start, at)


async def _insert_meter(db: aiosqlite.Connection, meter: Meter, at: datetime, *, lenient: bool = False) -> None:
    await db.execute(f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at) VALUES ({_METER_PLACEHOLDERS})",
                     rows.meter_row(meter, rows.us(at)))
    if meter.consumer_number:
        await _open_first(db, meter, at, lenient=lenient)
