"""The account side of both stores (API keys, meter registry edits, assignments, consumers,
fleet and PAYG summaries), as a mixin written once over storage.sql's Dialect.

Writes that read before they decide (assignments, deactivations) lock the meter's row first
(`dialect.for_update`), so two API calls on one meter, from one gateway or several sharing a
PostgreSQL database, take turns instead of both closing the same assignment (SQLite's one
writer takes turns already). A unique index that refuses a write another writer raced for is
answered as the checks would have answered it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from gateway.errors import InvalidRequest, NotFound, SinkError
from gateway.model import Assignment, Channel, EventKind, Meter, MeterStatus, Utility
from storage import accounts, registry
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
from storage.sql.conn import Conn, SqlBase
from storage.sql.rows import BALANCE_COLS, EVENT_COLS, METER_COLS

# Any constant, the same in every gateway sharing the database; apart from the migration
# lock ("mg", "mi") and the feed's keys.
_SYNC_LOCK = (0x6D67, 0x6D73)  # "mg", "ms"
_KEY_COLS = "id, name, hash, scopes, created_at, revoked_at"
# The assignments' opening_read and closing_read columns are no longer written: the reads
# are derived from the readings when an assignment is read (storage.consumption).
_ASSIGNMENT_COLS = "meter_id, consumer_number, start_ts, end_ts"
_INSERT_METER = f"INSERT INTO meters ({METER_COLS}, created_at, updated_at) VALUES ({', '.join('?' * 14)})"
#: The unique index of (utility, device_number), migration "device_numbers_and_verification_keys".
_DEVICE_INDEX = "meters_utility_device_number"


def _channel(utility: str) -> Channel:
    """The billing register of a meter of this (stored) utility."""
    return cumulative_channel(UTILITY[utility])


class SqlAccounts(SqlBase):
    """Account methods. The store's class names the two summaries' SQL, shaped per engine:
    `_latest_balances` (the newest balance row of each PAYG meter) and `_activity_since` (per
    meter: meter_id, status, utility, payg and its newest ts at or after :since). `_readings_before`
    is the WHERE clause of meter :m's readings before :t, shaped for the engine's indexes."""

    _latest_balances: ClassVar[str]
    _activity_since: ClassVar[str]
    _readings_before: ClassVar[str] = "meter_id = :m AND ts < :t"

    def _key(self, row: Any) -> ApiKey:
        d = self.dialect
        return ApiKey(key_id=row[0], name=row[1], hash=row[2], scopes=parse_scopes(row[3]), created_at=d.dt(row[4]),
                      revoked_at=d.opt_dt(row[5]))

    def _assignment(self, row: Any) -> Assignment:
        return Assignment(meter_id=row[0], consumer_number=row[1], start=self.dialect.dt(row[2]),
                          end=self.dialect.opt_dt(row[3]))

    def _column(self, name: str, value: Any) -> Any:
        """A meter field's value as the meters table stores it."""
        if name == "tags":
            return self.dialect.json(dict(value or {}))
        if name == "installed_at":
            return self.dialect.opt_ts(value)
        if name == "payg":
            return bool(value)
        if name in ("status", "utility", "protocol"):
            return value.value
        return value

    def _exact(self, t: datetime) -> datetime:
        """`t` as the store gives it back (UTC; µs on SQLite)."""
        return self.dialect.dt(self.dialect.ts(t))

    def _first_start(self, meter: Meter, at: datetime) -> datetime:
        installed = None if meter.installed_at is None else self._exact(meter.installed_at)
        return accounts.first_start(meter.meter_id, installed, self._exact(at))

    # -- API keys -------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey) -> None:
        async with self._tx(f"create API key {key.key_id}") as c:
            added = await c.execute(
                f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (:id, :name, :hash, :scopes, :at, :revoked)"
                " ON CONFLICT DO NOTHING",
                {"id": key.key_id, "name": key.name, "hash": key.hash, "scopes": format_scopes(key.scopes),
                 "at": self.dialect.ts(key.created_at), "revoked": self.dialect.opt_ts(key.revoked_at)})
            if added != 1:
                msg = f"API key id {key.key_id} is already taken"
                raise Conflict(msg)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        found = await self._select(f"API key {key_id}", f"SELECT {_KEY_COLS} FROM api_keys WHERE id = :k",
                                   {"k": key_id})
        return self._key(found[0]) if found else None

    async def list_api_keys(self) -> list[ApiKey]:
        found = await self._select("API keys", f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")
        return [self._key(r) for r in found]

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        async with self._tx(f"revoke API key {key_id}") as c:
            found = await c.one(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, :at) WHERE id = :k RETURNING {_KEY_COLS}",
                {"at": self.dialect.ts(at), "k": key_id})
        if found is None:
            raise NotFound("API key", key_id)
        return self._key(found)

    # -- meters ---------------------------------------------------------------------
    async def create_meters(self, meters: Sequence[Meter], *, at: datetime) -> None:
        # One transaction (all or none), checked and written a batch at a time, so the Python
        # around each statement is bounded by the batch and between batches the event loop
        # serves everyone else. A batch that conflicts rolls back the earlier ones.
        first: dict[tuple[Utility, str], str] = {}
        seen: set[str] = set()
        try:
            async with self._tx("create meters") as c:
                for start in range(0, len(meters), CREATE_BATCH):
                    batch = meters[start:start + CREATE_BATCH]
                    await self._check_new_meters(c, batch, seen, first)
                    await self._insert_new_meters(c, batch, at)
                    await asyncio.sleep(0)
        except SinkError as exc:
            if not isinstance(exc.__cause__, self.dialect.unique_violation):
                raise
            # Another writer created one of them, or took one of their device numbers, since
            # the checks: the index decided. Name the holders where it was that.
            if self.dialect.constraint(exc.__cause__) == _DEVICE_INDEX:
                async with self._read("create meters") as c:
                    for start in range(0, len(meters), CREATE_BATCH):
                        batch = meters[start:start + CREATE_BATCH]
                        clashes = registry.clashes(batch, await self._device_holders(c, registry.devices_of(batch)))
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
        d = self.dialect
        sets = "".join(f"{name} = :f_{name}, " for name in changes)
        params = {f"f_{n}": self._column(n, v) for n, v in changes.items()}
        if "device_number" in changes:
            # Evaluated before the SET: a device number that changes leaves the upgrade's exemption.
            sets += ("device_number_duplicate = (device_number_duplicate"
                     f" AND device_number {d.same} :f_device_number), ")
        try:
            async with self._tx(f"update meter {meter_id}") as c:
                if changes.get("installed_at") is not None:
                    # The meter's row locked first: a move-in cannot slip in between check and change.
                    await self._meter(c, meter_id, lock=True)
                    await self._check_installed_at(c, meter_id, changes["installed_at"])
                if changes.get("device_number") is not None:
                    await self._check_device_number(c, meter_id, changes["device_number"])
                found = await c.one(f"UPDATE meters SET {sets}updated_at = :at WHERE meter_id = :m"
                                    f" RETURNING {METER_COLS}", {**params, "at": d.ts(at), "m": meter_id})
        except SinkError as exc:
            if isinstance(exc.__cause__, d.unique_violation) and "device_number" in changes:
                # Another writer took the device number since the check: it names the holder now.
                async with self._read(f"update meter {meter_id}") as c:
                    await self._check_device_number(c, meter_id, changes["device_number"])
            raise
        if found is None:
            raise NotFound("meter", meter_id)
        return self.rows.meter(found)

    async def deactivate_meter(self, meter_id: str, *, at: datetime) -> Meter:
        async with self._tx(f"deactivate meter {meter_id}") as c:
            await self._meter(c, meter_id, lock=True)  # NotFound
            await self._close_open(c, at, "meter_id = :m", {"m": meter_id})
            found = await c.one(
                "UPDATE meters SET status = :status, consumer_number = NULL, updated_at = :at WHERE meter_id = :m"
                f" RETURNING {METER_COLS}",
                {"status": MeterStatus.INACTIVE.value, "at": self.dialect.ts(at), "m": meter_id})
        assert found is not None  # locked above
        return self.rows.meter(found)

    async def sync_meters(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                          at: datetime) -> list[DeviceNumberClash]:
        for attempt in range(3):
            try:
                return await self._sync_meters_once(meters, at=at)
            except SinkError as exc:
                # An API request took one of the device numbers after they were read (the
                # index refused the write): read them again rather than fail the start.
                if self.dialect.constraint(exc.__cause__) != _DEVICE_INDEX or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _sync_meters_once(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                                at: datetime) -> list[DeviceNumberClash]:
        if not meters:
            return []
        d = self.dialect
        async with self._tx("sync configured meters") as c:
            # Gateways starting together with a meter in both configs would each find it
            # missing (a row lock locks only rows that exist) and both insert it: one sync at
            # a time, held until this transaction ends.
            serialise = d.serialise(_SYNC_LOCK)
            if serialise is not None:
                await c.execute(serialise)
            holders = await self._device_holders(c, registry.devices_of(m for m, _ in meters))
            clashes = registry.clashes([m for m, _ in meters], holders)
            refused = {x.meter_id for x in clashes}
            for meter, fields in sorted(meters, key=lambda m: m[0].meter_id):  # lock order: no deadlocks
                if meter.meter_id in refused:  # another meter has its device number: not taken
                    meter, fields = dataclasses.replace(meter, device_number=None), fields - {"device_number"}
                found = await c.one(f"SELECT 1 FROM meters WHERE meter_id = :m{d.for_update}", {"m": meter.meter_id})
                if found is None:
                    await self._insert_meter(c, meter, at, lenient=True)
                    continue
                names = sorted(CONFIG_OWNED_FIELDS | (fields & (UPDATABLE_METER_FIELDS - CONFIG_OWNED_FIELDS)))
                exempt = (", device_number_duplicate = (device_number_duplicate"
                          f" AND device_number {d.same} :f_device_number)" if "device_number" in names else "")
                await c.execute(
                    f"UPDATE meters SET {', '.join(f'{n} = :f_{n}' for n in names)}{exempt}, updated_at = :at"
                    " WHERE meter_id = :m",
                    {**{f"f_{n}": self._column(n, getattr(meter, n)) for n in names}, "at": d.ts(at),
                     "m": meter.meter_id})
                if "consumer_number" in fields and meter.consumer_number:
                    had = await c.one("SELECT 1 FROM assignments WHERE meter_id = :m LIMIT 1", {"m": meter.meter_id})
                    if had is None:
                        await self._open_first(c, meter, at, lenient=True)
        return clashes

    # -- assignments and consumers ----------------------------------------------------
    async def assign_meter(self, meter_id: str, consumer_number: str, *, start: datetime,
                           at: datetime) -> Assignment:
        d = self.dialect
        start = self._exact(start)
        async with self._tx(f"assign meter {meter_id}") as c:
            meter = await self._meter(c, meter_id, lock=True)
            row = await c.one("SELECT consumer_number, start_ts FROM assignments"
                              " WHERE meter_id = :m AND end_ts IS NULL", {"m": meter_id})
            last = await c.one("SELECT max(end_ts) FROM assignments WHERE meter_id = :m", {"m": meter_id})
            accounts.check_assignment(
                meter_id, consumer_number, start, self._exact(at),
                open_=None if row is None else accounts.OpenAssignment(row[0], d.dt(row[1])),
                last_end=None if last is None else d.opt_dt(last[0]),
                deactivated_at=await self._deactivated_at(c, consumer_number), installed_at=meter.installed_at)
            await c.execute("UPDATE assignments SET end_ts = :start WHERE meter_id = :m AND end_ts IS NULL",
                            {"start": d.ts(start), "m": meter_id})
            new = await self._open(c, meter_id, consumer_number, start, at)
        [got] = await self._with_reads([(new, cumulative_channel(meter.utility))])
        return got

    async def assignments(self, *, meter_id: str | None = None, consumer_number: str | None = None,
                          reads: bool = True) -> list[Assignment]:
        where = ["true"]
        params: dict[str, Any] = {}
        for column, value in (("meter_id", meter_id), ("consumer_number", consumer_number)):
            if value is not None:
                where.append(f"a.{column} = :{column}")
                params[column] = value
        found = await self._select("assignments", "SELECT a.meter_id, a.consumer_number, a.start_ts, a.end_ts,"
                                   " m.utility FROM assignments AS a JOIN meters AS m ON m.meter_id = a.meter_id"
                                   f" WHERE {' AND '.join(where)} ORDER BY a.start_ts, a.meter_id, a.id", params)
        if not reads:
            return [self._assignment(r) for r in found]
        return await self._with_reads([(self._assignment(r), _channel(r[4])) for r in found])

    async def get_consumer(self, consumer_number: str) -> Consumer | None:
        found = await self._select(f"consumer {consumer_number}", "SELECT consumer_number, created_at, deactivated_at"
                                   " FROM consumers WHERE consumer_number = :c", {"c": consumer_number})
        if not found:
            return None
        row = found[0]
        return Consumer(row[0], row[2] is None, self.dialect.dt(row[1]), self.dialect.opt_dt(row[2]))

    async def deactivate_consumer(self, consumer_number: str, *, at: datetime) -> Consumer:
        d = self.dialect
        key = {"c": consumer_number, "at": d.ts(at)}
        async with self._tx(f"deactivate consumer {consumer_number}") as c:
            row = await c.one("UPDATE consumers SET deactivated_at = coalesce(deactivated_at, :at)"
                              " WHERE consumer_number = :c RETURNING consumer_number, created_at, deactivated_at", key)
            if row is None:
                raise NotFound("consumer", consumer_number)
            held = await c.fetch("SELECT meter_id FROM assignments WHERE consumer_number = :c AND end_ts IS NULL"
                                 " ORDER BY meter_id", key)
            for (meter_id,) in held:
                await self._meter(c, meter_id, lock=True)
                await self._close_open(c, at, "meter_id = :m AND consumer_number = :c", {**key, "m": meter_id})
                await c.execute("UPDATE meters SET consumer_number = NULL, updated_at = :at"
                                " WHERE meter_id = :m AND consumer_number = :c", {**key, "m": meter_id})
        return Consumer(row[0], False, d.dt(row[1]), d.dt(row[2]))

    # -- events, PAYG and fleet summaries ---------------------------------------------
    async def events_page(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                          start: datetime | None = None, end: datetime | None = None, limit: int = 100,
                          before: tuple[datetime, int] | None = None) -> list[StoredEvent]:
        d = self.dialect
        where = ["true"]
        params: dict[str, Any] = {"limit": limit}
        if meter_id is not None:
            where.append("meter_id = :m")
            params["m"] = meter_id
        if kind is not None:
            where.append("kind = :kind")
            params["kind"] = kind.value
        if start is not None:
            where.append("ts >= :start")
            params["start"] = d.ts(start)
        if end is not None:
            where.append("ts < :end")
            params["end"] = d.ts(end)
        if before is not None:
            where.append("(ts, seq) < (:b_ts, :b_seq)")
            params["b_ts"], params["b_seq"] = d.ts(before[0]), before[1]
        found = await self._select("events", f"SELECT seq, {EVENT_COLS} FROM events WHERE {' AND '.join(where)}"
                                   " ORDER BY ts DESC, seq DESC LIMIT :limit", params)
        event = self.rows.event
        return await converted(found, lambda r: StoredEvent(r[0], event(r[1:])))

    async def payg_totals(self) -> list[PaygTotals]:
        found = await self._select("PAYG totals", self._latest_balances.format(cols=BALANCE_COLS))
        return accounts.payg_totals(self.rows.balance(r) for r in found)

    async def meter_activity(self, *, since: datetime) -> list[MeterActivity]:
        found = await self._select("meter activity", self._activity_since, {"since": self.dialect.ts(since)})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], bool(r[3]), self._seen(r[4])) for r in found]

    # -- inside a write transaction ----------------------------------------------------------
    async def _meter(self, c: Conn, meter_id: str, *, lock: bool = False) -> Meter:
        row = await c.one(f"SELECT {METER_COLS} FROM meters WHERE meter_id = :m"
                          f"{self.dialect.for_update if lock else ''}", {"m": meter_id})
        if row is None:
            raise NotFound("meter", meter_id)
        return self.rows.meter(row)

    async def _deactivated_at(self, c: Conn, consumer_number: str) -> datetime | None:
        row = await c.one("SELECT deactivated_at FROM consumers WHERE consumer_number = :c", {"c": consumer_number})
        return None if row is None else self.dialect.opt_dt(row[0])

    async def _check_installed_at(self, c: Conn, meter_id: str, installed_at: datetime) -> None:
        """Conflict if readings or an assignment of the meter lie before `installed_at`."""
        d = self.dialect
        key = {"m": meter_id, "t": d.ts(installed_at)}
        found = await c.one(f"SELECT count(*), min(ts) FROM readings WHERE {self._readings_before}", key)
        orphaned, first = found if found else (0, None)
        assigned = await c.one("SELECT consumer_number, start_ts FROM assignments"
                               " WHERE meter_id = :m AND start_ts < :t ORDER BY start_ts LIMIT 1", key)
        accounts.check_installed_at(meter_id, self._exact(installed_at), orphaned=orphaned, first=d.opt_dt(first),
                                    assigned=None if assigned is None
                                    else accounts.OpenAssignment(assigned[0], d.dt(assigned[1])))

    async def _close_open(self, c: Conn, at: datetime, where: str, params: dict[str, Any]) -> None:
        await c.execute(f"UPDATE assignments SET end_ts = {self.dialect.greatest}(start_ts, :close_at)"
                        f" WHERE {where} AND end_ts IS NULL", {**params, "close_at": self.dialect.ts(at)})

    async def _open(self, c: Conn, meter_id: str, consumer_number: str, start: datetime, at: datetime) -> Assignment:
        d = self.dialect
        key = {"m": meter_id, "c": consumer_number, "start": d.ts(start), "at": d.ts(at)}
        await c.execute("INSERT INTO consumers (consumer_number, created_at) VALUES (:c, :at)"
                        " ON CONFLICT (consumer_number) DO NOTHING", key)
        await c.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at) VALUES (:m, :c, :start, NULL, :at)",
                        key)
        await c.execute("UPDATE meters SET consumer_number = :c, updated_at = :at WHERE meter_id = :m", key)
        return Assignment(meter_id, consumer_number, self._exact(start), None)

    async def _open_first(self, c: Conn, meter: Meter, at: datetime, *, lenient: bool) -> None:
        """The first assignment of a new meter, from its installation (or now)."""
        assert meter.consumer_number is not None
        deactivated = await self._deactivated_at(c, meter.consumer_number)
        try:
            if deactivated is not None:
                msg = (f"meter {meter.meter_id}: consumer {meter.consumer_number} was deactivated at "
                       f"{deactivated.isoformat()}")
                raise Conflict(msg)
            start = self._first_start(meter, at)
        except Conflict:
            if not lenient:
                raise
            # The configuration is not the place to argue: the meter stays unassigned (one whose
            # installation lies ahead is assigned at a start after it).
            await c.execute("UPDATE meters SET consumer_number = NULL WHERE meter_id = :m", {"m": meter.meter_id})
            return
        await self._open(c, meter.meter_id, meter.consumer_number, start, at)

    async def _device_holders(self, c: Conn, devices: Sequence[tuple[Utility, str]]) -> dict[tuple[Utility, str], str]:
        """The meter holding each (utility, device number): the one not exempted by the upgrade
        (device_number_duplicate), else the first registered."""
        if not devices:
            return {}
        pairs, params = self.dialect.table("d", (("utility", "text"), ("device_number", "text")),
                                           [(u.value, n) for u, n in devices])
        found = await c.fetch(
            f"SELECT m.utility, m.device_number, m.meter_id FROM {pairs}"
            " JOIN meters AS m ON m.device_number = d.device_number AND m.utility = d.utility"
            " ORDER BY m.device_number_duplicate, m.created_at, m.meter_id", params)
        holders: dict[tuple[Utility, str], str] = {}
        for utility, device_number, meter_id in found:
            holders.setdefault((UTILITY[utility], device_number), meter_id)
        return holders

    async def _check_new_meters(self, c: Conn, meters: Sequence[Meter], seen: set[str],
                                first: dict[tuple[Utility, str], str]) -> None:
        """Conflict for a meter that exists or repeats (`seen`: the ids of earlier batches), DeviceNumberTaken
        for a device number another meter has (`first`: those of earlier batches)."""
        ids = [m.meter_id for m in meters]
        found = await c.fetch(f"SELECT meter_id FROM meters WHERE {self.dialect.any_of('meter_id', 'ids')}"
                              " ORDER BY meter_id", {"ids": self.dialect.ids(ids)})
        taken = [r[0] for r in found] + sorted(i for i, n in Counter(ids).items() if n > 1 or i in seen)
        if taken:
            msg = f"meter(s) {', '.join(taken[:20])}{' ...' if len(taken) > 20 else ''} already exist"
            raise Conflict(msg)
        seen.update(ids)
        clashes = registry.clashes(meters, await self._device_holders(c, registry.devices_of(meters)), first=first)
        if clashes:
            raise DeviceNumberTaken(clashes)

    async def _check_device_number(self, c: Conn, meter_id: str, device_number: str) -> None:
        """DeviceNumberTaken if another meter of `meter_id`'s utility holds `device_number` (and it is
        not the one `meter_id` has already: a meter the upgrade exempted keeps it through other changes)."""
        row = await c.one(
            "SELECT o.meter_id, m.utility FROM meters AS m JOIN meters AS o ON o.utility = m.utility"
            " AND o.device_number = :d AND o.meter_id <> m.meter_id WHERE m.meter_id = :m"
            f" AND m.device_number {self.dialect.differs} :d"
            " ORDER BY o.device_number_duplicate, o.created_at, o.meter_id LIMIT 1",
            {"d": device_number, "m": meter_id})
        if row is not None:
            raise DeviceNumberTaken([DeviceNumberClash(meter_id, UTILITY[row[1]], device_number, row[0])])

    async def _insert_new_meters(self, c: Conn, meters: Sequence[Meter], at: datetime) -> None:
        """Insert meters none of which exists, with their first assignments, in a few statements.

        The first assignment is _open_first's; a meter that already has readings (its opening read
        is one of them) or whose consumer was deactivated takes that path itself, the others (the
        usual new meter) open with no opening read from the same start in one statement.
        """
        d = self.dialect
        at_ = d.ts(at)
        await c.executemany(_INSERT_METER, [self.rows.meter_row(m, at_) for m in meters])
        assigned = [m for m in meters if m.consumer_number]
        if not assigned:
            return
        pairs, params = d.table("a", (("meter_id", "text"), ("consumer_number", "text")),
                                [(m.meter_id, m.consumer_number) for m in assigned])
        special = {r[0] for r in await c.fetch(
            f"SELECT a.meter_id FROM {pairs} WHERE EXISTS (SELECT 1 FROM readings AS r WHERE r.meter_id = a.meter_id)"
            " OR EXISTS (SELECT 1 FROM consumers AS c WHERE c.consumer_number = a.consumer_number"
            " AND c.deactivated_at IS NOT NULL)", params)}
        for m in assigned:
            if m.meter_id in special:
                await self._open_first(c, m, at, lenient=False)
        plain = [m for m in assigned if m.meter_id not in special]
        if not plain:
            return
        # WHERE true: SQLite's documented way to keep "ON CONFLICT" from being parsed as a join constraint.
        people, params = d.table("p", (("consumer_number", "text"),), [(m.consumer_number,) for m in plain])
        await c.execute("INSERT INTO consumers (consumer_number, created_at) SELECT DISTINCT p.consumer_number, :at"
                        f" FROM {people} WHERE true ON CONFLICT (consumer_number) DO NOTHING", {**params, "at": at_})
        # The start is _open_first's (Conflict for an installation after `at`).
        new, params = d.table("a", (("m", "text"), ("c", "text"), ("s", "timestamptz")),
                              [(m.meter_id, m.consumer_number, d.ts(self._first_start(m, at))) for m in plain])
        await c.execute(f"INSERT INTO assignments ({_ASSIGNMENT_COLS}, created_at) SELECT a.m, a.c, a.s, NULL, :at"
                        f" FROM {new}", {**params, "at": at_})

    async def _insert_meter(self, c: Conn, meter: Meter, at: datetime, *, lenient: bool = False) -> None:
        await c.execute(_INSERT_METER, self.rows.meter_row(meter, self.dialect.ts(at)))
        if meter.consumer_number:
            await self._open_first(c, meter, at, lenient=lenient)
