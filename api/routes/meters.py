from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.pagination import decode_cursor, encode_cursor
from api.schemas.meters import MeterOut
from api.schemas.readings import BalanceOut, Page, ReadingOut
from gateway.errors import InvalidRequest, NotFound
from gateway.model import Channel

router = APIRouter(prefix="/v1/meters", tags=["meters"])

Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size")]


async def _require_meter(store: StoreDep, meter_id: str) -> None:
    if await store.get_meter(meter_id) is None:
        raise NotFound("meter", meter_id)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        msg = f"{name}={value.isoformat()} has no time zone; add Z or an offset (e.g. 2026-01-01T00:00:00Z)"
        raise InvalidRequest(msg)
    return value.astimezone(UTC)


@router.get("", response_model=Page[MeterOut])
async def list_meters(store: StoreDep, search: str | None = Query(None, max_length=100, description="Meter number, device number or consumer number"),
                      limit: Limit = 100, cursor: str | None = None) -> Page[MeterOut]:
    """Meters ordered by meter number."""
    after = decode_cursor(cursor, 1)[0] if cursor else None
    meters = await store.list_meters(search=search, limit=limit + 1, after=after)
    more = len(meters) > limit
    meters = meters[:limit]
    return Page[MeterOut](items=[MeterOut.of(m) for m in meters],
                          next_cursor=encode_cursor([meters[-1].meter_id]) if more else None)


@router.get("/{meter_id}", response_model=MeterOut)
async def get_meter(store: StoreDep, meter_id: str) -> MeterOut:
    """One meter."""
    meter = await store.get_meter(meter_id)
    if meter is None:
        raise NotFound("meter", meter_id)
    return MeterOut.of(meter)


@router.get("/{meter_id}/readings/latest", response_model=list[ReadingOut])
async def latest_readings(store: StoreDep, meter_id: str) -> list[ReadingOut]:
    """The latest reading of each channel of the meter."""
    await _require_meter(store, meter_id)
    return [ReadingOut.of(r) for r in await store.latest_readings(meter_id)]


@router.get("/{meter_id}/readings", response_model=Page[ReadingOut])
async def readings(store: StoreDep, meter_id: str,
                   start: Annotated[datetime | None, Query(alias="from", description="Inclusive, ISO 8601 with zone; default 24 h ago")] = None,
                   end: Annotated[datetime | None, Query(alias="to", description="Exclusive, ISO 8601 with zone; default now")] = None,
                   channel: Channel | None = None, limit: Limit = 1000, cursor: str | None = None) -> Page[ReadingOut]:
    """Readings of one meter in [from, to), ordered by time then channel."""
    await _require_meter(store, meter_id)
    now = datetime.now(UTC)
    end_ = _utc(end, "to") if end else now
    start_ = _utc(start, "from") if start else end_ - timedelta(days=1)
    if start_ >= end_:
        msg = f"from ({start_.isoformat()}) must be before to ({end_.isoformat()})"
        raise InvalidRequest(msg)
    after = None
    if cursor:
        ts, ch = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(ts), str(ch))
        except (TypeError, ValueError):
            raise InvalidRequest("cursor is not one this API issued") from None
    rows = await store.readings(meter_id, start=start_, end=end_, channel=channel, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].ts.isoformat(), rows[-1].channel.value]) if more else None
    return Page[ReadingOut](items=[ReadingOut.of(r) for r in rows], next_cursor=nxt)


@router.get("/{meter_id}/balance", response_model=BalanceOut)
async def latest_balance(store: StoreDep, meter_id: str) -> BalanceOut:
    """The latest PAYG balance the meter reported."""
    await _require_meter(store, meter_id)
    bal = await store.latest_balance(meter_id)
    if bal is None:
        raise NotFound("balance of meter", meter_id)
    return BalanceOut.of(bal)
