"""The account side of the PostgreSQL store (API keys, meter registry edits, assignments,
consumers, fleet and PAYG summaries), as a mixin of TimescaleStore.

Writes that read before they decide (assignments, deactivations) lock the meter's row
first (SELECT ... FOR UPDATE), so two API calls on one meter, from one gateway or several,
take turns instead of both closing the same assignment.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.errors import InvalidRequest, NotFound, SinkError
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
from storage.timescale import rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Any constant, the same in every gateway sharing the database; apart from the migration
# lock ("mg", "mi") and the feed's keys.
_SYNC_LOCK = (0x6D67, 0x6D73)  # "mg", "ms"
_KEY_COLS = "id, name, hash, scopes, created_at, revoked_at"
# The assignments' opening_read and closing_read columns are no longer written: the reads
# are derived from the readings when an assignment is read (storage.consumption).
_ASSIGNMENT_COLS = "meter_id, consumer_number, start_ts, end_ts"
_METER_PLACEHOLDERS = ", ".join(["%s"] * 14)
#: The unique index of (utility, device_number), migration "device_numbers_and_verification_keys".
_DEVICE_INDEX = "meters_utility_device_number"


def _key(row: Any) -> ApiKey:
    return ApiKey(key_id=row[0], name=row[1], hash=row[2], scopes=parse_scopes(row[3]), created_at=rows.utc(row[4]),
                  revoked_at=rows.opt_utc(row[5]))


def _assignment(row: Any) -> Assignment:
    return Assignment(meter_id=row[0], consumer_number=row[1], start=rows.utc(row[2]), end=rows.opt_utc(row[3]))


def _channel(utility: str) -> Channel:
    """The billing register of a meter of this (stored) utility."""
    return cumulative_channel(UTILITY[utility])


def _column(name: str, value: Any) -> Any:
    """A meter field's value as the meters table stores it."""
    if name == "tags":
        return Jsonb(dict(value or {}))
    if name == "installed_at":
        return rows.opt_utc(value)
    if name in ("status", "utility", "protocol"):
        return value.value
    return value


class TimescaleAccounts(consumption.ConsumptionQueries):
    """Account methods; the store provides `_conn`, `_fetch` and `_clock`, and its queries
    mixin `_probe` (for the reads of assignments)."""

    def _conn(self, action: str) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    async def _fetch(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        raise NotImplementedError

    # -- API keys -------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey) -> None:
        async with self._conn(f"create API key {key.key_id}") as conn:
            cur = await conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (key.key_id, key.name, key.hash, format_scopes(key.scopes), rows.utc(key.created_at),
                 rows.opt_utc(key.revoked_at)))
            if cur.rowcount != 1:
                msg = f"API key id {key.key_id} is already taken"
                raise Conflict(msg)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        found = await self._fetch(f"API key {key_id}", f"SELECT {_KEY_COLS} FROM api_keys WHERE id = %(k)s",
                                  {"k": key_id})
        return _key(found[0]) if found else None

    async def list_api_keys(self) -> list[ApiKey]:
        found = await self._fetch("API keys", f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")
        return [_key(r) for r in found]

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        found = await self._fetch(
            f"revoke API key {key_id}",
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, %(at)s) WHERE id = %(k)s RETURNING {_KEY_COLS}",
            {"at": rows.utc(at), "k": key_id})
        if not found:
            raise NotFound("API key", key_id)
        return _key(found[0])

    # -- meters ---------------------------------------------------------------------
    async def create_meters(self, meters: Sequence[Meter], *, at: datetime) -> None:
        # One transaction (all or none), checked and written a batch at a time, so the Python
        # around each statement is bounded by the batch. A batch that conflicts rolls back the rest.
        first: dict[tuple[Utility, str], str] = {}
        seen: set[str] = set()
        async with self._conn("create meters") as conn:
            try:
                async with conn.transaction():
                    for start in range(0, len(meters), CREATE_BATCH):
                        batch = meters[start:start + CREATE_BATCH]
                        await _check_new_meters(conn, batch, seen, first)
                        await _insert_new_meters(conn, batch, at)
            except psycopg.errors.UniqueViolation as exc:
                # Another writer created one of them, or took one of their device numbers,
                # since the checks: the index decided. Name the holders where it was that.
                if exc.diag.constraint_name == _DEVICE_INDEX:
                    for start in range(0, len(meters), CREATE_BATCH):
                        batch = meters[start:start + CREATE_BATCH]
                        clashes = registry.clashes(batch, await _device_holders(conn, registry.devices_of(batch)))
                        if clashes:
                            raise DeviceNumberTaken(clashes) from None
                ids = [m.meter_id for m in meters[:10]]
                msg = f"meter(s) among {', '.join(ids)} were created meanwhile by another request"
                raise Conflict(msg) from None

    async def update_meter(self, meter_id: str, changes: Mapping[str, Any], *, at: datetime) -> Meter:
        unknown = sorted(set(changes) - UPDATABLE_METER_FIELDS)
        if unknown:
            msg = (f"meter {meter_id}: cannot change {', '.join(unknown)} "
                   f"(changeable: {', '.join(sorted(UPDATABLE_METER_FIELDS))})")
            raise InvalidRequest(msg)
        sets = "".join(f"{name} = %s, " for name in changes)
        params = [*(_column(n, v) for n, v in changes.items())]
        if "device_number" in changes:
            # Evaluated before the SET: a device number that changes leaves the upgrade's exemption.
            sets += "device_number_duplicate = (device_number_duplicate AND device_number IS NOT DISTINCT FROM %s), "
            params.append(changes["device_number"])
        async with self._conn(f"update meter {meter_id}") as conn:
            try:
                async with conn.transaction():
                    if changes.get("installed_at") is not None:
                        # The meter's row locked first: a move-in cannot slip in between check and change.
                        await conn.execute("SELECT 1 FROM meters WHERE meter_id = %s FOR UPDATE", [meter_id])
                        await _check_installed_at(conn, meter_id, changes["installed_at"])
                    if changes.get("device_number") is not None:
                        await _check_device_number(conn, meter_id, changes["device_number"])
                    cur = await conn.execute(
                        f"UPDATE meters SET {sets}updated_at = %s WHERE meter_id = %s RETURNING {rows.METER_COLS}",
                        [*params, rows.utc(at), meter_id])
                    found = await cur.fetchone()
            except psycopg.errors.UniqueViolation:
                # Another writer took the device number since the check: it names the holder now.
                await _check_device_number(conn, meter_id, changes["device_number"])
                raise
        if found is None:
            raise NotFound("meter", meter_id)
        return rows.meter(found)

    async def deactivate_meter(self, meter_id: str, *, at: datetime) -> Meter:
        async with self._conn(f"deactivate meter {meter_id}") as conn, conn.transaction():
            await _meter(conn, meter_id, lock=True)  # NotFound
            await _close_open(conn, at, "meter_id = %s", meter_id)
            cur = await conn.execute(
                "UPDATE meters SET status = %s, consumer_number = NULL, updated_at = %s WHERE meter_id = %s"
                f" RETURNING {rows.METER_COLS}", (MeterStatus.INACTIVE.value, rows.utc(at), meter_id))
            row = await cur.fetchone()
            assert row is not None  # locked above
            return rows.meter(row)

    async def sync_meters(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                          at: datetime) -> list[DeviceNumberClash]:
        for attempt in range(3):
            try:
                return await self._sync_meters_once(meters, at=at)
            except SinkError as exc:
                # An API request took one of the device numbers after they were read (the
                # index refused the write): read them again rather than fail the start.
                cause = exc.__cause__
                if not (isinstance(cause, psycopg.errors.UniqueViolation)
                        and cause.diag.constraint_name == _DEVICE_INDEX) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _sync_meters_once(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                                at: datetime) -> list[DeviceNumberClash]:
        if not meters:
            return []
        async with self._conn("sync configured meters") as conn, conn.transaction():
            # Gateways starting together with a meter in both configs would each find it
            # missing (FOR UPDATE locks only rows that exist) and both insert it: one sync at
            # a time, held until this transaction ends.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _SYNC_LOCK)
            holders = await _device_holders(conn, registry.devices_of(m for m, _ in meters))
            clashes = registry.clashes([m for m, _ in meters], holders)
            refused = {c.meter_id for c in clashes}
            for meter, fields in sorted(meters, key=lambda m: m[0].meter_id):  # lock order: no deadlocks
                if meter.meter_id in refused:  # another meter has its device number: not taken
                    meter, fields = dataclasses.replace(meter, device_number=None), fields - {"device_number"}
                cur = await conn.execute("SELECT 1 FROM meters WHERE meter_id = %s FOR UPDATE", [meter.meter_id])
                if await cur.fetchone() is None:
                    await _insert_meter(conn, meter, at, lenient=True)
                    continue
                names = sorted(CONFIG_OWNED_FIELDS | (fields & (UPDATABLE_METER_FIELDS - CONFIG_OWNED_FIELDS)))
                exempt = (", device_number_duplicate = (device_number_duplicate"
                          " AND device_number IS NOT DISTINCT FROM %s)" if "device_number" in names else "")
                await conn.execute(
                    f"UPDATE meters SET {', '.join(f'{n} = %s' for n in names)}{exempt}, updated_at = %s"
                    " WHERE meter_id = %s",
                    [*(_column(n, getattr(meter, n)) for n in names), *([meter.device_number] if exempt else []),
                     rows.utc(at), meter.meter_id])
                if "consumer_number" in fields and meter.consumer_number:
                    cur = await conn.execute("SELECT 1 FROM assignments WHERE meter_id = %s LIMIT 1", [meter.meter_id])
                    if await cur.fetchone() is None:
                        await _open_first(conn, meter, at, lenient=True)
        return clashes

    # -- assignments and consumers ----------------------------------------------------
    async def assign_meter(self, meter_id: str, consumer_number: str, *, start: datetime,
                           at: datetime) -> Assignment:
        start = rows.utc(start)
        async with self._conn(f"assign meter {meter_id}") as conn, conn.transaction():
            meter = await _meter(conn, meter_id, lock=True)
            cur = await conn.execute(
                "SELECT consumer_number, start_ts FROM assignments WHERE meter_id = %s AND end_ts IS NULL", [meter_id])
            row = await cur.fetchone()
            open_ = accounts.OpenAssignment(row[0], rows.utc(row[1])) if row else None
            cur = await conn.execute("SELECT max(end_ts) FROM assignments WHERE meter_id = %s", [meter_id])
            last = await cur.fetchone()
            accounts.check_assignment(meter_id, consumer_number, start, rows.utc(at), open_=open_,
                                      last_end=rows.opt_utc(last[0]) if last else None,
                                      deactivated_at=await _deactivated_at(conn, consumer_number),
                                      installed_at=rows.opt_utc(meter.installed_at))
            await conn.execute("UPDATE assignments SET end_ts = %s WHERE meter_id = %s AND end_ts IS NULL",
                               (start, meter_id))
            new = await _open(conn, meter_id, consumer_number, start, at)
        [got] = await self._with_reads([(new, cumulative_channel(meter.utility))])
        return got

    async def assignments(self, *, meter_id: str | None = None, consumer_number: str | None = None,
                          reads: bool = True) -> list[Assignment]:
        where = ["true"]
        params: dict[str, Any] = {}
        for column, value in (("meter_id", meter_id), ("consumer_number", consumer_number)):
            if value is not None:
                where.append(f"a.{column} = %({column})s")
                params[column] = value
        found = await self._fetch("assignments", "SELECT a.meter_id, a.consumer_number, a.start_ts, a.end_ts,"
                                  " m.utility FROM assignments AS a JOIN meters AS m ON m.meter_id = a.meter_id"
                                  f" WHERE {' AND '.join(where)} ORDER BY a.start_ts, a.meter_id, a.id", params)
        if not reads:
            return [_assignment(r) for r in found]
        return await self._with_reads([(_assignment(r), _channel(r[4])) for r in found])

    async def get_consumer(self, consumer_number: str) -> Consumer | None:
        found = await self._fetch(f"consumer {consumer_number}", "SELECT consumer_number, created_at, deactivated_at"
                                  " FROM consumers WHERE consumer_number = %(c)s", {"c": consumer_number})
        if not found:
            return None
        row = found[0]
        return Consumer(row[0], row[2] is None, rows.utc(row[1]), rows.opt_utc(row[2]))

    async def deactivate_consumer(self, consumer_number: str, *, at: datetime) -> Consumer:
        async with self._conn(f"deactivate consumer {consumer_number}") as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE consumers SET deactivated_at = coalesce(deactivated_at, %s) WHERE consumer_number = %s"
                " RETURNING consumer_number, created_at, deactivated_at", (rows.utc(at), consumer_number))
            row = await cur.fetchone()
            if row is None:
                raise NotFound("consumer", consumer_number)
            cur = await conn.execute("SELECT meter_id FROM assignments WHERE consumer_number = %s AND end_ts IS NULL"
                                     " ORDER BY meter_id", [consumer_number])
            for (meter_id,) in await cur.fetchall():
                await _meter(conn, meter_id, lock=True)
                await _close_open(conn, at, "meter_id = %s AND consumer_number = %s", meter_id, consumer_number)
                await conn.execute("UPDATE meters SET consumer_number = NULL, updated_at = %s"
                                   " WHERE meter_id = %s AND consumer_number = %s", (rows.utc(at), meter_id,
                                                                                      consumer_number))
        return Consumer(row[0], False, rows.utc(row[1]), rows.utc(row[2]))

    # -- events, PAYG and fleet summaries ---------------------------------------------
    async def events_page(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                          start: datetime | None = None, end: datetime | None = None, limit: int = 100,
                          before: tuple[datetime, int] | None = None) -> list[StoredEvent]:
        where = ["true"]
        params: dict[str, Any] = {"limit": limit}
        if meter_id is not None:
            where.append("meter_id = %(m)s")
            params["m"] = meter_id
        if kind is not None:
            where.append("kind = %(kind)s")
            params["kind"] = kind.value
        if start is not None:
            where.append("ts >= %(start)s")
            params["start"] = rows.utc(start)
        if end is not None:
            where.append("ts < %(end)s")
            params["end"] = rows.utc(end)
        if before is not None:
            where.append("(ts, seq) < (%(b_ts)s, %(b_seq)s)")
            params["b_ts"], params["b_seq"] = rows.utc(before[0]), before[1]
        found = await self._fetch("events", f"SELECT seq, {rows.EVENT_COLS} FROM events WHERE {' AND '.join(where)}"
                                  " ORDER BY ts DESC, seq DESC LIMIT %(limit)s", params)
        return await converted(found, _stored_event)

    async def payg_totals(self) -> list[PaygTotals]:
        found = await self._fetch(
            "PAYG totals",
            f"SELECT l.* FROM meters AS m CROSS JOIN LATERAL (SELECT {rows.BALANCE_COLS} FROM balances AS b"
            " WHERE b.meter_id = m.meter_id ORDER BY b.ts DESC LIMIT 1) AS l WHERE m.payg")
        return accounts.payg_totals(rows.balance(r) for r in found)

    async def meter_activity(self, *, since: datetime) -> list[MeterActivity]:
        found = await self._fetch("meter activity", "SELECT m.meter_id, m.status, m.utility, m.payg, greatest(r.ts, b.ts)"
            " FROM meters AS m"
            " LEFT JOIN LATERAL (SELECT ts FROM readings WHERE meter_id = m.meter_id AND ts >= %(since)s"
            "  ORDER BY ts DESC LIMIT 1) AS r ON true"
            " LEFT JOIN LATERAL (SELECT ts FROM balances WHERE meter_id = m.meter_id AND ts >= %(since)s"
            "  ORDER BY ts DESC LIMIT 1) AS b ON true"
            " ORDER BY m.meter_id", {"since": rows.utc(since)})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], r[3], rows.opt_utc(r[4])) for r in found]


def _stored_event(row: Any) -> StoredEvent:
    return StoredEvent(row[0], rows.event(row[1:]))


# -- inside a transaction -------------------------------------------------------------------
async def _meter(conn: Conn, meter_id: str, *, lock: bool = False) -> Meter:
    cur = await conn.execute(f"SELECT {rows.METER_COLS} FROM meters WHERE meter_id = %s"
                             f"{' FOR UPDATE' if lock else ''}", [meter_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound("meter", meter_id)
    return rows.meter(row)


async def _deactivated_at(conn: Conn, consumer_number: str) -> datetime | None:
    cur = await conn.execute("SELECT deactivated_at FROM consumers WHERE consumer_number = %s", [consumer_number])
    row = await cur.fetchone()
    return rows.opt_utc(row[0]) if row else None


async def _check_installed_at(conn: Conn, meter_id: str, installed_at: datetime) -> None:
    """Conflict if readings or an assignment of the meter lie before `installed_at`."""
    cur = await conn.execute("SELECT count(*), min(ts) FROM readings WHERE meter_id = %s AND ts < %s",
                             (meter_id, rows.utc(installed_at)))
    found = await cur.fetchone()
    orphaned, first = found if found else (0, None)
    cur = await conn.execute("SELECT consumer_number, start_ts FROM assignments WHERE meter_id = %s AND start_ts < %s"
                             " ORDER BY start_ts LIMIT 1", (meter_id, rows.utc(installed_at)))
    assigned = await cur.fetchone()
    accounts.check_installed_at(meter_id, rows.utc(installed_at), orphaned=orphaned, first=rows.opt_utc(first),
                                assigned=accounts.OpenAssignment(assigned[0], rows.utc(assigned[1]))
                                if assigned else None)  # fmt: skip


async def _close_open(conn: Conn, at: datetime, where: str, *params: Any) -> None:
    await conn.execute(f"UPDATE assignments SET end_ts = greatest(start_ts, %s) WHERE {where} AND end_ts IS NULL",
                       (rows.utc(at), *params))


async def _open(conn: Conn, meter_id: str, consumer_number: str, start: datetime, at: datetime) -> Assignment:
    await conn.execute("INSERT INTO consumers (consumer_number, created_at) VALUES (%s, %s)"
                       " ON CONFLICT (consumer_number) DO NOTHING", (consumer_number, rows.utc(at)))
    await conn.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at) VALUES (%s, %s, %s, NULL, %s)",
                       (meter_id, consumer_number, rows.utc(start), rows.utc(at)))
    await conn.execute("UPDATE meters SET consumer_number = %s, updated_at = %s WHERE meter_id = %s",
                       (consumer_number, rows.utc(at), meter_id))
    return Assignment(meter_id, consumer_number, rows.utc(start), None)


async def _open_first(conn: Conn, meter: Meter, at: datetime, *, lenient: bool) -> None:
    """The first assignment of a new meter, from its installation (or now)."""
    assert meter.consumer_number is not None
    deactivated = await _deactivated_at(conn, meter.consumer_number)
    try:
        if deactivated is not None:
            msg = (f"meter {meter.meter_id}: consumer {meter.consumer_number} was deactivated at "
                   f"{deactivated.isoformat()}")
            raise Conflict(msg)
        start = accounts.first_start(meter.meter_id, rows.opt_utc(meter.installed_at), rows.utc(at))
    except Conflict:
        if not lenient:
            raise
        # The configuration is not the place to argue: the meter stays unassigned (one whose
        # installation lies ahead is assigned at a start after it).
        await conn.execute("UPDATE meters SET consumer_number = NULL WHERE meter_id = %s", [meter.meter_id])
        return
    await _open(conn, meter.meter_id, meter.consumer_number, start, at)


async def _device_holders(conn: Conn, devices: Sequence[tuple[Utility, str]]) -> dict[tuple[Utility, str], str]:
    """The meter holding each (utility, device number): the one not exempted by the upgrade
    (device_number_duplicate), else the first registered."""
    if not devices:
        return {}
    cur = await conn.execute(
        "SELECT m.utility, m.device_number, m.meter_id FROM unnest(%s::text[], %s::text[]) AS d(utility, device_number)"
        " JOIN meters AS m ON m.device_number = d.device_number AND m.utility = d.utility"
        " ORDER BY m.device_number_duplicate, m.created_at, m.meter_id",
        ([u.value for u, _ in devices], [d for _, d in devices]))
    holders: dict[tuple[Utility, str], str] = {}
    for utility, device_number, meter_id in await cur.fetchall():
        holders.setdefault((UTILITY[utility], device_number), meter_id)
    return holders


async def _check_new_meters(conn: Conn, meters: Sequence[Meter], seen: set[str],
                            first: dict[tuple[Utility, str], str]) -> None:
    """Conflict for a meter that exists or repeats (`seen`: the ids of earlier batches), DeviceNumberTaken
    for a device number another meter has (`first`: those of earlier batches)."""
    ids = [m.meter_id for m in meters]
    # A join, not meter_id = ANY(%s): with statistics from when the table was small (a large import
    # runs before autovacuum analyses it), the planner scans it and searches the array per row.
    cur = await conn.execute("SELECT m.meter_id FROM unnest(%s::text[]) AS i(meter_id)"
                             " JOIN meters AS m ON m.meter_id = i.meter_id ORDER BY m.meter_id", [ids])
    taken = [r[0] for r in await cur.fetchall()] + sorted(i for i, n in Counter(ids).items() if n > 1 or i in seen)
    if taken:
        msg = f"meter(s) {', '.join(taken[:20])}{' ...' if len(taken) > 20 else ''} already exist"
        raise Conflict(msg)
    seen.update(ids)
    clashes = registry.clashes(meters, await _device_holders(conn, registry.devices_of(meters)), first=first)
    if clashes:
        raise DeviceNumberTaken(clashes)


async def _check_device_number(conn: Conn, meter_id: str, device_number: str) -> None:
    """DeviceNumberTaken if another meter of `meter_id`'s utility holds `device_number` (and it is
    not the one `meter_id` has already: a meter the upgrade exempted keeps it through other changes)."""
    cur = await conn.execute(
        "SELECT o.meter_id, m.utility FROM meters AS m JOIN meters AS o ON o.utility = m.utility"
        " AND o.device_number = %(d)s AND o.meter_id <> m.meter_id WHERE m.meter_id = %(m)s"
        " AND m.device_number IS DISTINCT FROM %(d)s"
        " ORDER BY o.device_number_duplicate, o.created_at, o.meter_id LIMIT 1", {"d": device_number, "m": meter_id})
    row = await cur.fetchone()
    if row is not None:
        raise DeviceNumberTaken([DeviceNumberClash(meter_id, UTILITY[row[1]], device_number, row[0])])


async def _insert_new_meters(conn: Conn, meters: Sequence[Meter], at: datetime) -> None:
    """Insert meters none of which exists, with their first assignments, in a few statements.

    The first assignment is _open_first's; a meter that already has readings (its opening read
    is one of them) or whose consumer was deactivated takes that path itself, the others (the
    usual new meter) open with no opening read from the same start in one statement.
    """
    at_ = rows.utc(at)
    await conn.cursor().executemany(f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at)"
                                    f" VALUES ({_METER_PLACEHOLDERS})", [rows.meter_row(m, at_) for m in meters])
    assigned = [m for m in meters if m.consumer_number]
    if not assigned:
        return
    cur = await conn.execute(
        "SELECT a.meter_id FROM unnest(%s::text[], %s::text[]) AS a(meter_id, consumer_number)"
        " WHERE EXISTS (SELECT 1 FROM readings AS r WHERE r.meter_id = a.meter_id)"
        " OR EXISTS (SELECT 1 FROM consumers AS c WHERE c.consumer_number = a.consumer_number"
        " AND c.deactivated_at IS NOT NULL)",
        ([m.meter_id for m in assigned], [m.consumer_number for m in assigned]))
    special = {r[0] for r in await cur.fetchall()}
    for m in assigned:
        if m.meter_id in special:
            await _open_first(conn, m, at, lenient=False)
    plain = [m for m in assigned if m.meter_id not in special]
    if not plain:
        return
    await conn.execute("INSERT INTO consumers (consumer_number, created_at) SELECT DISTINCT c, %s"
                       " FROM unnest(%s::text[]) AS c ON CONFLICT (consumer_number) DO NOTHING",
                       (at_, [m.consumer_number for m in plain]))
    # The start is _open_first's (Conflict for an installation after `at`).
    starts = [rows.utc(accounts.first_start(m.meter_id, m.installed_at, at)) for m in plain]
    await conn.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at)"
                       " SELECT m, c, s, NULL, %s FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
                       " AS a(m, c, s)",
                       (at_, [m.meter_id for m in plain], [m.consumer_number for m in plain], starts))


async def _insert_meter(conn: Conn, meter: Meter, at: datetime, *, lenient: bool = False) -> None:
    await conn.execute(f"INSERT INTO meters ({rows.METER_COLS}, created_at, updated_at)"
                       f" VALUES ({_METER_PLACEHOLDERS})", rows.meter_row(meter, rows.utc(at)))
    if meter.consumer_number:
        await _open_first(conn, meter, at, lenient=lenient)
