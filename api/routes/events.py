"""Events (filtered, paginated) and the fleet summary."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.auth import RequireScope
from api.deps import GatewayDep, NowDep, StoreDep, check_text_params
from api.pagination import encode_cursor
from api.params import Cursor, From, Limit, To, decode_ts_key, utc
from api.schemas.common import Page
from api.schemas.events import EventOut, FleetSummary
from gateway.errors import InvalidRequest
from gateway.model import EventKind, MeterStatus

router = APIRouter(tags=["events"], dependencies=[Depends(check_text_params), Depends(RequireScope("read"))])

#: Event kinds that say "look at this meter": the fleet summary's anomalies.
ANOMALY_KINDS = (EventKind.ANOMALY, EventKind.TAMPER, EventKind.INSPECTION_RECOMMENDED,
                 EventKind.DUPLICATE_CONFLICT)
SILENT_FACTOR = 3  # intervals without a reading before a meter counts as silent
SILENT_DEFAULT = timedelta(hours=1)  # for meters whose interval this gateway does not know (PAYG, other gateways)
LOOKBACK = timedelta(days=7)


@router.get("/v1/events", response_model=Page[EventOut])
async def events(store: StoreDep, start: From = None, end: To = None,
                 kind: Annotated[EventKind | None, Query(examples=["anomaly"])] = None,
                 meter_id: Annotated[str | None, Query(max_length=64, examples=["M-0001"])] = None,
                 limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    """Events, most recent first, filtered by kind, meter and time [from, to)."""
    start_ = utc(start, "from") if start is not None else None
    end_ = utc(end, "to") if end is not None else None
    if start_ is not None and end_ is not None and start_ >= end_:
        msg = f"from ({start_.isoformat()}) must be before to ({end_.isoformat()})"
        raise InvalidRequest(msg)
    before = decode_ts_key(cursor, int) if cursor else None
    rows = await store.events_page(meter_id=meter_id, kind=kind, start=start_, end=end_, limit=limit + 1,
                                   before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].event.ts.isoformat(), rows[-1].seq]) if more else None
    return {"items": [EventOut.row(e) for e in rows], "next_cursor": nxt}


@router.get("/v1/fleet/summary", response_model=FleetSummary)
async def fleet_summary(store: StoreDep, gateway: GatewayDep, now: NowDep) -> dict[str, Any]:
    """Meters by status, silent meters (no data for 3x their interval, or 1 h), anomalies of the last 24 h."""
    activity = await store.meter_activity(since=now - LOOKBACK)
    intervals = gateway.poll_intervals() if gateway is not None else {}
    by_status = dict.fromkeys((s.value for s in MeterStatus), 0)
    silent = []
    for a in activity:
        by_status[a.status.value] += 1
        interval = intervals.get(a.meter_id)
        after = timedelta(seconds=SILENT_FACTOR * interval) if interval else SILENT_DEFAULT
        if a.status is MeterStatus.ACTIVE and (a.last_seen is None or now - a.last_seen > after):
            silent.append({"meter_id": a.meter_id, "last_seen": a.last_seen, "silent_after_s": after.total_seconds()})
    by_kind: dict[str, int] = {}
    meters: set[str] = set()
    for kind in ANOMALY_KINDS:
        found = await store.events_page(kind=kind, start=now - timedelta(hours=24), limit=10_000)
        if found:
            by_kind[kind.value] = len(found)
            meters.update(e.event.meter_id for e in found if e.event.meter_id)
    return {"meters": len(activity), "by_status": by_status, "silent": silent,
            "anomalies_24h": {"total": sum(by_kind.values()), "by_kind": by_kind, "meters": sorted(meters)}}
