"""The account side of the embedded store (API keys, meter registry edits, assignments,
consumers, fleet and PAYG summaries), as a mixin of SqliteStore."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import aiosqlite

from gateway.errors import InvalidRequest, NotFound
from gateway.model import Assignment, Channel, EventKind, Meter, MeterStatus, Utility
from storage import accounts, consumption, registry
from storage.keys import ApiKey, format_scopes, parse_scopes
from storage.records import (
    CONFIG_OWNED_FIELDS,
    CREATE_BATCH,
    UPDATABLE_METER_FIELDS,
    Conflict,
    Consumer,
    DeviceNumberClash,
    DeviceNumberTaken,
    MeterActivity,
    PaygTotals,
    StoredEvent,
    cumulative_channel,
)
from storage.rows import METER_STATUS, UTILITY, converted
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
        # One transaction (all or none), checked and written a batch at a time: the SQL runs in
        # aiosqlite's thread, the Python around it is bounded by the batch, and between batches
        # the event loop serves everyone else. A batch that conflicts rolls back the earlier ones.
        first: dict[tuple[Utility, str], str] = {}
        seen: set[str] = set()
        async with self._transaction("create meters") as db:
            for start in range(0, len(meters), CREATE_BATCH):
                batch = meters[start:start + CREATE_BATCH]
                await _check_new_meters(db, batch, seen, first)
                await _insert_new_meters(db, batch, at)
                await asyncio.sleep(0)

    async def update_meter(self, meter_id: str, changes: Mapping[str, Any], *, at: datetime) -> Meter:
        unknown = sorted(set(changes) - UPDATABLE_METER_FIELDS)
        if unknown:
            msg = (f"meter {meter_id}: cannot change {', '.join(unknown)} "
                   f"(changeable: {', '.join(sorted(UPDATABLE_METER_FIELDS))})")
            raise InvalidRequest(msg)
        async with self._transaction(f"update meter {meter_id}") as db:
            if changes.get("installed_at") is not None:
                await _check_installed_at(db, meter_id, changes["installed_at"])
            if changes.get("device_number") is not None:
                await _check_device_number(db, meter_id, changes["device_number"])
            sets = ", ".join(f"{name} = ?" for name in changes)
            params = [*(_column(n, v) for n, v in changes.items())]
            if "device_number" in changes:
                # Evaluated before the SET: a device number that changes leaves the upgrade's exemption.
                sets += ", device_number_duplicate = (device_number_duplicate AND device_number IS ?)"
                params.append(changes["device_number"])
            found = await db.execute_fetchall(
                f"UPDATE meters SET {sets + ', ' if sets else ''}updated_at = ? WHERE meter_id = ?"
                f" RETURNING {rows.METER_COLS}",
                (*params, rows.us(at), meter_id))
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

    async def sync_meters(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                          at: datetime) -> list[DeviceNumberClash]:
        if not meters:
            return []
        async with self._transaction("sync configured meters") as db:
            holders = await _device_holders(db, registry.devices_of(m for m, _ in meters))
            clashes = registry.clashes([m for m, _ in meters], holders)
            refused = {c.meter_id for c in clashes}
            for meter, fields in meters:
                if meter.meter_id in refused:  # another meter has its device number: not taken
                    meter, fields = dataclasses.replace(meter, device_number=None), fields - {"device_number"}
                found = await db.execute_fetchall("SELECT 1 FROM meters WHERE meter_id = ?", (meter.meter_id,))
                if not found:
                    await _insert_meter(db, meter, at, lenient=True)
                    continue
                names = sorted(CONFIG_OWNED_FIELDS | (fields & (UPDATABLE_METER_FIELDS - CONFIG_OWNED_FIELDS)))
                exempt = (", device_number_duplicate = (device_number_duplicate AND device_number IS ?)"
                          if "device_number" in names else "")
                await db.execute(
                    f"UPDATE meters SET {', '.join(f'{n} = ?' for n in names)}{exempt}, updated_at = ?"
                    " WHERE meter_id = ?",
                    (*(_column(n, getattr(meter, n)) for n in names),
                     *([meter.device_number] if exempt else []), rows.us(at), meter.meter_id))
                if "consumer_number" in fields and meter.consumer_number:
                    had = await db.execute_fetchall("SELECT 1 FROM assignments WHERE meter_id = ? LIMIT 1",
                                                    (meter.meter_id,))
                    if not had:
                        await _open_first(db, meter, at, lenient=True)
        return clashes

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
        return await converted(found, _stored_event)

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


def _stored_event(row: Any) -> StoredEvent:
    return StoredEvent(row[0], rows.event(row[1:]))


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


async def _device_holders(db: aiosqlite.Connection, devices: Sequence[tuple[Utility, str]],
                          ) -> dict[tuple[Utility, str], str]:
    """The meter holding each (utility, device number): the one not exempted by the upgrade
    (device_number_duplicate), else the first registered."""
    if not devices:
        return {}
    found = await db.execute_fetchall(
        "SELECT m.utility, m.device_number, m.meter_id FROM json_each(?) AS j"
        " JOIN meters AS m ON m.device_number = j.value ->> 1 AND m.utility = j.value ->> 0"
        " ORDER BY m.device_number_duplicate, m.created_at, m.meter_id",
        (json.dumps([[u.value, d] for u, d in devices]),))
    holders: dict[tuple[Utility, str], str] = {}
    for utility, device_number, meter_id in found:
        holders.setdefault((UTILITY[utility], device_number), meter_id)
    return holders


async def _check_new_meters(db: aiosqlite.Connection, meters: Sequence[Meter], seen: set[str],
                            first: dict[tuple[Utility, str], str]) -> None:
    """Conflict for a meter that exists or repeats (`seen`: the ids of earlier batches), DeviceNumberTaken
    for a device number another meter has (`first`: those of earlier batches)."""
    ids = [m.meter_id for m in meters]
    found = await db.execute_fetchall(
        "SELECT meter_id FROM meters WHERE meter_id IN (SELECT value FROM json_each(?)) ORDER BY meter_id",
        (json.dumps(ids),))
    taken = [r[0] for r in found] + sorted(i for i, n in Counter(ids).items() if n > 1 or i in seen)
    if taken:
        msg = f"meter(s) {', '.join(taken[:20])}{' ...' if len(taken) > 20 else ''} already exist"
        raise Conflict(msg)
    seen.update(ids)
    clashes = registry.clashes(meters, await _device_holders(db, registry.devices_of(meters)), first=first)
    if clashes:
        raise DeviceNumberTaken(clashes)


async def _check_device_number(db: aiosqlite.Connection, meter_id: str, device_number: str) -> None:
    """DeviceNumberTaken if another meter of `meter_id`'s utility holds `device_number` (and it is
    not the one `meter_id` has already: a meter the upgrade exempted keeps it through other changes)."""
    found = await db.execute_fetchall(
        "SELECT o.meter_id, m.utility FROM meters AS m JOIN meters AS o ON o.utility = m.utility"
        " AND o.device_number = ?1 AND o.meter_id <> m.meter_id WHERE m.meter_id = ?2 AND m.device_number IS NOT ?1"
        " ORDER BY o.device_number_duplicate, o.created_at, o.meter_id LIMIT 1", (device_number, meter_id))
    for holder, utility in found:
        raise DeviceNumberTaken([DeviceNumberClash(meter_id, UTILITY[utility], device_number, holder)])


async def _insert_new_meters(db: aiosqlite.Connection, meters: Sequence[Meter], at: datetime) -> None:
    """Insert meters none of which exists, with their first assignments, in a few statements.

    The first assignment is _open_first's; a meter that already has readings (its opening read
    is one of them) or whose consumer was deactivated takes that path itself, the others (the
    usual new meter) open with no opening read from the same start in one statement.
    """
    await db.executemany(f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at)"
                         f" VALUES ({_METER_PLACEHOLDERS})", [rows.meter_row(m, rows.us(at)) for m in meters])
    assigned = [m for m in meters if m.consumer_number]
    if not assigned:
        return
    special = {r[0] for r in await db.execute_fetchall(
        "SELECT j.value FROM json_each(?) AS j WHERE EXISTS (SELECT 1 FROM readings AS r WHERE r.meter_id = j.value)"
        " UNION SELECT j.key FROM json_each(?) AS j JOIN consumers AS c ON c.consumer_number = j.value"
        " AND c.deactivated_at IS NOT NULL",
        (json.dumps([m.meter_id for m in assigned]), json.dumps({m.meter_id: m.consumer_number for m in assigned})))}
    for m in assigned:
        if m.meter_id in special:
            await _open_first(db, m, at, lenient=False)
    plain = [m for m in assigned if m.meter_id not in special]
    await db.executemany("INSERT INTO consumers (consumer_number, created_at) VALUES (?, ?)"
                         " ON CONFLICT (consumer_number) DO NOTHING",
                         [(c, rows.us(at)) for c in dict.fromkeys(m.consumer_number for m in plain)])
    # The start is _open_first's (Conflict for an installation after `at`).
    await db.executemany(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at) VALUES (?, ?, ?, NULL, ?)",
                         [(m.meter_id, m.consumer_number, rows.us(accounts.first_start(m.meter_id, m.installed_at, at)),
                           rows.us(at)) for m in plain])


async def _insert_meter(db: aiosqlite.Connection, meter: Meter, at: datetime, *, lenient: bool = False) -> None:
    await db.execute(f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at) VALUES ({_METER_PLACEHOLDERS})",
                     rows.meter_row(meter, rows.us(at)))
    if meter.consumer_number:
        await _open_first(db, meter, at, lenient=lenient)
