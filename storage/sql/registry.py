"""The meter registry's questions, once for both stores (a mixin): identifiers in use, device
numbers shared from before they were unique, the fleet counted and its silent meters paged.
Each answer is one statement, whatever the fleet's size. Who counts as silent is asked with
each engine's own SQL (`_activity`: an index probe per meter, shaped per engine)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any, ClassVar

from gateway.model import MeterStatus
from storage.records import CREATE_BATCH, FleetCounts, MeterActivity, SharedDeviceNumber, SilentRule, TakenIdentifiers
from storage.rows import METER_STATUS, UTILITY
from storage.sql.conn import SqlBase


class SqlRegistry(SqlBase):
    """Registry queries. The store's class names `_activity` (a CTE `a` of the active meters
    after :after_id with their last_seen), `_silent` (its condition) and `_rule_params`."""

    _activity: ClassVar[str]
    _silent: ClassVar[str]

    def _rule_params(self, rule: SilentRule, after_id: str = "") -> dict[str, Any]:
        raise NotImplementedError

    async def taken_identifiers(self, meter_ids: Sequence[str],
                                devices: Sequence[tuple[str, str]]) -> TakenIdentifiers:
        # A statement per CREATE_BATCH identifiers: the Python that builds the parameters and reads
        # the rows stays a few milliseconds per hand-off, whatever the length of a CSV import.
        ids: set[str] = set()
        holders: dict[tuple[str, str], str] = {}
        for start in range(0, max(len(meter_ids), len(devices)), CREATE_BATCH):
            part = await self._taken_part(meter_ids[start:start + CREATE_BATCH], devices[start:start + CREATE_BATCH])
            ids |= part.meter_ids
            holders.update(part.devices)
        return TakenIdentifiers(frozenset(ids), holders)

    async def _taken_part(self, meter_ids: Sequence[str],
                          devices: Sequence[tuple[str, str]]) -> TakenIdentifiers:
        d = self.dialect
        pairs, params = d.table("d", (("utility", "text"), ("device_number", "text")),
                                [(str(u), n) for u, n in devices])
        found = await self._select(
            "meters in use",
            f"SELECT 0, meter_id, NULL, NULL, false, NULL FROM meters WHERE {d.any_of('meter_id', 'ids')}"
            " UNION ALL SELECT 1, m.meter_id, m.utility, m.device_number, m.device_number_duplicate, m.created_at"
            f" FROM {pairs} JOIN meters AS m ON m.device_number = d.device_number AND m.utility = d.utility"
            " ORDER BY 1, 5, 6, 2",
            {"ids": d.ids(meter_ids), **params})
        holders: dict[tuple[str, str], str] = {}
        for part, meter_id, utility, device_number, _, _ in found:
            if part == 1:  # the holder: not exempted by the upgrade, else the first registered
                holders.setdefault((utility, device_number), meter_id)
        return TakenIdentifiers(frozenset(r[1] for r in found if r[0] == 0), holders)

    async def installation_dates(self, meter_ids: Sequence[str]) -> dict[str, datetime]:
        found = await self._select(
            "installation dates",
            "SELECT meter_id, installed_at FROM meters WHERE installed_at IS NOT NULL"
            f" AND {self.dialect.any_of('meter_id', 'ids')}",
            {"ids": self.dialect.ids(meter_ids)})
        return {r[0]: self.dialect.dt(r[1]) for r in found}

    async def shared_device_numbers(self) -> list[SharedDeviceNumber]:
        found = await self._select(
            "shared device numbers",
            "SELECT utility, device_number, meter_id FROM meters WHERE device_number IS NOT NULL"
            " AND (utility, device_number) IN (SELECT utility, device_number FROM meters"
            "  WHERE device_number IS NOT NULL GROUP BY utility, device_number HAVING count(*) > 1)"
            " ORDER BY utility, device_number, device_number_duplicate, created_at, meter_id")
        return [SharedDeviceNumber(UTILITY[u], n, tuple(r[2] for r in group))
                for (u, n), group in groupby(found, key=lambda r: (r[0], r[1]))]

    async def fleet_counts(self, rule: SilentRule) -> FleetCounts:
        found = await self._select(
            "fleet counts",
            f"{self._activity} SELECT 'silent', count(*) FROM a WHERE {self._silent}"
            " UNION ALL SELECT status, count(*) FROM meters GROUP BY status", self._rule_params(rule))
        by_status = dict.fromkeys(MeterStatus, 0)
        silent = 0
        for name, n in found:
            if name == "silent":
                silent = n
            else:
                by_status[METER_STATUS[name]] = n
        return FleetCounts(sum(by_status.values()), by_status, silent)

    async def silent_meters(self, rule: SilentRule, *, limit: int = 100,
                            after: str | None = None) -> list[MeterActivity]:
        found = await self._select(
            "silent meters",
            f"{self._activity} SELECT meter_id, status, utility, payg, last_seen FROM a WHERE {self._silent}"
            " ORDER BY meter_id LIMIT :limit", {**self._rule_params(rule, after or ""), "limit": limit})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], bool(r[3]), self._seen(r[4])) for r in found]
