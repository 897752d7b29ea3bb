"""The meter registry's questions on the embedded store (a mixin of SqliteStore): identifiers
in use, device numbers shared from before they were unique, the fleet counted and its silent
meters paged. Each answer is one statement on the reader connection, whatever the fleet's size."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from gateway.model import MeterStatus
from storage.records import CREATE_BATCH, FleetCounts, MeterActivity, SharedDeviceNumber, SilentRule, TakenIdentifiers
from storage.rows import METER_STATUS, UTILITY
from storage.sqlite import rows

# Per active meter: its newest reading or balance update since :since (-1: none), and after how
# long it counts as silent (the rule's own value for the meters in :after, else :default).
# Each max() is one probe of a (meter_id, ts) index; the thresholds are a materialized CTE, which
# SQLite looks up through an automatic index.
_ACTIVITY = """
WITH t(meter_id, after_us) AS MATERIALIZED (SELECT key, value FROM json_each(:after_map)),
a AS (
    SELECT m.meter_id, m.status, m.utility, m.payg,
        max(coalesce((SELECT max(r.ts) FROM readings AS r WHERE r.meter_id = m.meter_id AND r.ts >= :since), -1),
            coalesce((SELECT max(b.ts) FROM balances AS b WHERE b.meter_id = m.meter_id AND b.ts >= :since), -1))
            AS last_seen,
        coalesce((SELECT t.after_us FROM t WHERE t.meter_id = m.meter_id), :default_us) AS after_us
    FROM meters AS m WHERE m.status = 'active' AND m.meter_id > :after_id
)"""
_SILENT = "a.last_seen < :now - a.after_us"


def _rule_params(rule: SilentRule, after_id: str = "") -> dict[str, Any]:
    micro = timedelta(microseconds=1)
    return {"after_map": json.dumps({m: a // micro for m, a in rule.after.items()}), "since": rows.us(rule.since),
            "default_us": rule.default_after // micro, "now": rows.us(rule.now), "after_id": after_id}


class SqliteRegistry:
    """Registry queries; the store provides `_fetch` (on its read-only connection)."""

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Any]:
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
        found = await self._fetch(
            "meters in use",
            "SELECT 0, meter_id, NULL, NULL, 0, 0 FROM meters WHERE meter_id IN (SELECT value FROM json_each(:ids))"
            " UNION ALL SELECT 1, m.meter_id, m.utility, m.device_number, m.device_number_duplicate, m.created_at"
            " FROM json_each(:devices) AS j"
            " JOIN meters AS m ON m.device_number = j.value ->> 1 AND m.utility = j.value ->> 0"
            " ORDER BY 1, 5, 6, 2",
            {"ids": json.dumps(list(meter_ids)), "devices": json.dumps([[str(u), d] for u, d in devices])})
        holders: dict[tuple[str, str], str] = {}
        for part, meter_id, utility, device_number, _, _ in found:
            if part == 1:  # the holder: not exempted by the upgrade, else the first registered
                holders.setdefault((utility, device_number), meter_id)
        return TakenIdentifiers(frozenset(r[1] for r in found if r[0] == 0), holders)

    async def shared_device_numbers(self) -> list[SharedDeviceNumber]:
        found = await self._fetch(
            "shared device numbers",
            "SELECT utility, device_number, json_group_array(meter_id) FROM ("
            " SELECT utility, device_number, meter_id FROM meters WHERE device_number IS NOT NULL"
            " AND (utility, device_number) IN (SELECT utility, device_number FROM meters"
            "  WHERE device_number IS NOT NULL GROUP BY utility, device_number HAVING count(*) > 1)"
            " ORDER BY utility, device_number, device_number_duplicate, created_at, meter_id)"
            " GROUP BY utility, device_number ORDER BY utility, device_number")
        return [SharedDeviceNumber(UTILITY[u], d, tuple(json.loads(ids))) for u, d, ids in found]

    async def fleet_counts(self, rule: SilentRule) -> FleetCounts:
        found = await self._fetch(
            "fleet counts",
            f"{_ACTIVITY} SELECT 'silent', count(*) FROM a WHERE {_SILENT}"
            " UNION ALL SELECT status, count(*) FROM meters GROUP BY status", _rule_params(rule))
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
        found = await self._fetch(
            "silent meters",
            f"{_ACTIVITY} SELECT meter_id, status, utility, payg, last_seen FROM a WHERE {_SILENT}"
            " ORDER BY meter_id LIMIT :limit", {**_rule_params(rule, after or ""), "limit": limit})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], bool(r[3]), None if r[4] < 0 else rows.dt(r[4]))
                for r in found]
