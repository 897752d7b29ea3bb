"""Events (filtered, paginated) and the fleet summary."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.auth import RequireScope
from api.deps import GatewayDep, NowDep, StoreDep, check_text_params
from api.pagination import decode_cursor, encode_cursor
from api.params import Cursor, From, Limit, To, decode_ts_key, utc
from api.ports import GatewayPort
from api.responses import PageJSON
from api.schemas.common import Page
from api.schemas.events import EventOut, FleetSummary, SilentMeter
from gateway.errors import InvalidRequest
from gateway.model import EventKind
from storage.records import SilentRule

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
                 limit: Limit = 100, cursor: Cursor = None) -> PageJSON:
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
    return await PageJSON.page(rows, EventOut.row, next_cursor=nxt)


def _silent_rule(gateway: GatewayPort | None, now: datetime) -> SilentRule:
    intervals = gateway.poll_intervals() if gateway is not None else {}
    return SilentRule(now=now, since=now - LOOKBACK, default_after=SILENT_DEFAULT,
                      after={m: timedelta(seconds=SILENT_FACTOR * s) for m, s in intervals.items() if s})


@router.get("/v1/fleet/summary", response_model=FleetSummary)
async def fleet_summary(store: StoreDep, gateway: GatewayDep, now: NowDep) -> dict[str, Any]:
    """Meters by status, how many are silent (no data for 3x their interval, or 1 h; the list: /v1/fleet/silent),
    anomalies of the last 24 h."""
    counts = await store.fleet_counts(_silent_rule(gateway, now))
    by_kind: dict[str, int] = {}
    meters: set[str] = set()
    for kind in ANOMALY_KINDS:
        found = await store.events_page(kind=kind, start=now - timedelta(hours=24), limit=10_000)
        if found:
            by_kind[kind.value] = len(found)
            meters.update(e.event.meter_id for e in found if e.event.meter_id)
    return {"meters": counts.meters, "by_status": {s.value: n for s, n in counts.by_status.items()},
            "silent": counts.silent,
            "anomalies_24h": {"total": sum(by_kind.values()), "by_kind": by_kind, "meters": sorted(meters)}}


@router.get("/v1/fleet/silent", response_model=Page[SilentMeter])
async def silent_meters(store: StoreDep, gateway: GatewayDep, now: NowDep, limit: Limit = 100,
                        cursor: Cursor = None) -> dict[str, Any]:
    """Active meters that sent nothing for 3x their poll interval (1 h where this gateway does not poll them), by
    meter number."""
    after = decode_cursor(cursor, 1)[0] if cursor else None
    if after is not None and not isinstance(after, str):
        raise InvalidRequest("cursor is not one this API issued")
    rule = _silent_rule(gateway, now)
    found = await store.silent_meters(rule, limit=limit + 1, after=after)
    more = len(found) > limit
    found = found[:limit]
    return {"items": [{"meter_id": a.meter_id, "last_seen": a.last_seen,
                       "silent_after_s": rule.after_of(a.meter_id).total_seconds()} for a in found],
            "next_cursor": encode_cursor([found[-1].meter_id]) if more else None}
