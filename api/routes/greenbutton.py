"""Green Button "Download My Data" for a consumer: an ESPI Atom feed of its usage points' hourly
consumption, for the customer portal of the account system."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from api.auth import RequireScope
from api.cim.pages import targets_of
from api.deps import NowDep, StoreDep, check_text_params
from api.espi.feed import UsagePoint, feed
from api.params import From, To, period
from api.routes.accounts import ConsumerPath
from api.schemas.common import error
from gateway.errors import InvalidRequest
from gateway.model import Channel
from storage.keys import Scope
from storage.records import ConsumptionBucket, cumulative_channel

router = APIRouter(tags=["green button"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
ATOM = "application/atom+xml"
#: A year of hourly data: ESPI's usual "Download My Data" span (a store answers 10,000 buckets at most).
MAX_SPAN = timedelta(days=366)
BASE = "/espi/1_1/resource"


async def _share(store: StoreDep, meter_id: str, channel: Channel, lo: datetime, hi: datetime,
                 now: datetime) -> list[ConsumptionBucket]:
    """Hourly consumption of [lo, hi): whole hours from the consumption rule, and the partial hours at
    either end (a move-in or move-out inside an hour) from the boundary reads at lo and hi, so that two
    consumers of one meter never share an hour's consumption."""
    first = lo.replace(minute=0, second=0, microsecond=0)
    first = first if first == lo else first + timedelta(hours=1)
    last = max(hi.replace(minute=0, second=0, microsecond=0), first)
    out: list[ConsumptionBucket] = []
    if lo < min(first, hi):
        out.append(await _part(store, meter_id, channel, lo, min(first, hi), now))
    if first < last:
        out += await store.consumption(meter_id, channel, start=first, end=last, bucket="hour", now=now)
    if last < hi:
        out.append(await _part(store, meter_id, channel, last, hi, now))
    return out


async def _part(store: StoreDep, meter_id: str, channel: Channel, lo: datetime, hi: datetime,
                now: datetime) -> ConsumptionBucket:
    read = await store.billing_read(meter_id, channel, start=lo, end=hi, now=now)
    return ConsumptionBucket(start=lo, end=hi, value=read.consumption, first_read=read.opening,
                             last_read=read.closing, estimated=read.estimated, suspect=read.suspect)


async def _pieces(pieces: Iterator[str]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece.encode()


@router.get("/v1/consumers/{consumer_number}/green-button", dependencies=READ, response_class=Response,
            responses={200: {"content": {ATOM: {}}, "description": "A Green Button (NAESB ESPI) Atom feed"},
                       404: error("No such consumer")})
async def green_button(store: StoreDep, now: NowDep, consumer_number: ConsumerPath, start: From = None, end: To = None,
                       tz: Annotated[str, Query(max_length=64, description="IANA zone of the LocalTimeParameters",
                                                examples=["Africa/Nairobi"])] = "UTC") -> Response:
    """The consumer's usage points (each meter while assigned to it, its share of [from, to) only) with
    their hourly consumption as IntervalBlocks of one day, in Wh (electricity, heat) or m³ (water, gas),
    ESPI quality codes (validated 17, estimated by like day 8 or linear interpolation 9, questionable 10)."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"tz {tz[:64]!r} is not an IANA time zone (e.g. Africa/Nairobi)") from None
    start_, end_ = period(start, end, now, timedelta(days=30))
    if end_ - start_ > MAX_SPAN:
        raise InvalidRequest(f"the window from {start_.isoformat()} to {end_.isoformat()} is longer than "
                             f"{MAX_SPAN.days} days")
    if start_ >= now:
        raise InvalidRequest(f"from ({start_.isoformat()}) is in the future")
    points = []
    for target in await targets_of(store, [], [consumer_number], start_, end_):
        hi = min(target.end, now)
        buckets = await _share(store, target.meter.meter_id, cumulative_channel(target.meter.utility), target.start,
                               hi, now) if target.start < hi else []
        points.append(UsagePoint(target.meter.meter_id, target.meter.utility, target.start, target.end, buckets))
    return StreamingResponse(_pieces(feed(consumer_number, points, zone=tz, now=now, base=BASE)), media_type=ATOM)

