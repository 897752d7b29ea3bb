"""The meter registry's questions on PostgreSQL (a mixin of TimescaleStore): identifiers in use,
device numbers shared from before they were unique, the fleet counted and its silent meters
paged. Each answer is one statement, whatever the fleet's size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.model import MeterStatus
from storage.records import CREATE_BATCH, FleetCounts, MeterActivity, SharedDeviceNumber, SilentRule, TakenIdentifiers
from storage.rows import METER_STATUS, UTILITY
from storage.timescale import rows

# Per active meter: its newest reading or balance update since %(since)s, and after how long it
# counts as silent (the rule's own value for the meters listed, else the default). Each LATERAL
# is one probe of a (meter_id, ts) index per chunk.
_ACTIVITY = """
WITH t AS (SELECT * FROM unnest(%(after_ids)s::text[], %(after_s)s::float8[]) AS t(meter_id, after_s)),
a AS (
    SELECT m.meter_id, m.status, m.utility, m.payg, greatest(r.ts, b.ts) AS last_seen,
        make_interval(secs => coalesce(t.after_s, %(default_s)s)) AS after
    FROM meters AS m
    LEFT JOIN t ON t.meter_id = m.meter_id
    LEFT JOIN LATERAL (SELECT ts FROM readings WHERE meter_id = m.meter_id AND ts >= %(since)s
                       ORDER BY ts DESC LIMIT 1) AS r ON true
    LEFT JOIN LATERAL (SELECT ts FROM balances WHERE meter_id = m.meter_id AND ts >= %(since)s
                       ORDER BY ts DESC LIMIT 1) AS b ON true
    WHERE m.status = 'active' AND m.meter_id > %(after_id)s
)"""
_SILENT = "(a.last_seen IS NULL OR a.last_seen < %(now)s - a.after)"


def _rule_params(rule: SilentRule, after_id: str = "") -> dict[str, Any]:
    return {"after_ids": list(rule.after), "after_s": [a.total_seconds() for a in rule.after.values()],
            "default_s": rule.default_after.total_seconds(), "since": rows.utc(rule.since),
            "now": rows.utc(rule.now), "after_id": after_id}


class TimescaleRegistry:
    """Registry queries; the store provides `_fetch`."""

    async def _fetch(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
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
            # Joins with unnest, not meter_id = ANY(...): see storage/timescale/accounts._check_new_meters.
            "SELECT 0, m.meter_id, NULL, NULL, false, NULL::timestamptz FROM unnest(%(ids)s::text[]) AS i(meter_id)"
            " JOIN meters AS m ON m.meter_id = i.meter_id"
            " UNION ALL SELECT 1, m.meter_id, m.utility, m.device_number, m.device_number_duplicate, m.created_at"
            " FROM unnest(%(utilities)s::text[], %(devices)s::text[]) AS d(utility, device_number)"
            " JOIN meters AS m ON m.device_number = d.device_number AND m.utility = d.utility"
            " ORDER BY 1, 5, 6, 2",
            {"ids": list(meter_ids), "utilities": [str(u) for u, _ in devices], "devices": [d for _, d in devices]})
        holders: dict[tuple[str, str], str] = {}
        for part, meter_id, utility, device_number, _, _ in found:
            if part == 1:  # the holder: not exempted by the upgrade, else the first registered
                holders.setdefault((utility, device_number), meter_id)
        return TakenIdentifiers(frozenset(r[1] for r in found if r[0] == 0), holders)

    async def shared_device_numbers(self) -> list[SharedDeviceNumber]:
        found = await self._fetch(
            "shared device numbers",
            "SELECT utility, device_number, array_agg(meter_id ORDER BY device_number_duplicate, created_at, meter_id)"
            " FROM meters WHERE device_number IS NOT NULL GROUP BY utility, device_number HAVING count(*) > 1"
            " ORDER BY utility, device_number")
        return [SharedDeviceNumber(UTILITY[u], d, tuple(ids)) for u, d, ids in found]

    async def fleet_counts(self, rule: SilentRule) -> FleetCounts:
        found = await self._fetch(
            "fleet counts",
            f"{_ACTIVITY} SELECT 'silent', count(*) FROM a WHERE {_SILENT}"
            " UNION ALL (SELECT status, count(*) FROM meters GROUP BY status)", _rule_params(rule))
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
            " ORDER BY meter_id LIMIT %(limit)s", {**_rule_params(rule, after or ""), "limit": limit})
        return [MeterActivity(r[0], METER_STATUS[r[1]], UTILITY[r[2]], r[3], rows.opt_utc(r[4])) for r in found]
