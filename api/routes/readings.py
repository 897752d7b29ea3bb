"""Readings of a meter, the latest per channel, the change feed, verification, consumption."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request

from api.auth import RequireScope, WriteKey
from api.deps import NowDep, StoreDep, check_text_params
from api.pagination import encode_cursor
from api.params import Cursor, From, Limit, Shape, To, decode_seq, decode_ts_key, period, utc
from api.responses import PageJSON
from api.routes.meters import MeterPath, require_meter
from api.schemas.common import Page, error
from api.schemas.readings import (
    BucketOut,
    ConsumptionOut,
    FeedOut,
    HistoryEntryOut,
    QualityCodes,
    ReadingOut,
    VerifyIn,
)
from api.schemas.time import Timestamp
from api.schemas.trail import EditIn, TrailOut, trail_items
from gateway.errors import InvalidField, NotFound
from gateway.model import UNITS, Channel, Status
from storage.boundary import check_period
from storage.keys import Scope
from storage.records import cumulative_channel

router = APIRouter(tags=["readings"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("No such meter")}
_DEFAULT_SPAN = {"hour": timedelta(days=1), "day": timedelta(days=31), "month": timedelta(days=365)}


def _quality_codes(request: Request) -> QualityCodes:
    """The readings' ReadingQuality codes from this app's CIM tables (the CIM routes' own)."""
    return QualityCodes(request.app.state.cim_tables)


CodesDep = Annotated[QualityCodes, Depends(_quality_codes)]


@router.get("/v1/meters/{meter_id}/readings/latest", response_model=Page[ReadingOut] | list[ReadingOut],
            dependencies=READ, responses=_NOT_FOUND)
async def latest_readings(store: StoreDep, codes: CodesDep, meter_id: MeterPath, shape: Shape = "page") -> PageJSON:
    """The latest reading of each channel of the meter, by channel: one page (`next_cursor` is always null, a
    meter has a few dozen channels at most)."""
    latest = await store.latest_readings(meter_id)
    if not latest:  # only then is it worth a second query: unknown meter (404) or no reading yet
        await require_meter(store, meter_id)
    items = [codes.reading(r) for r in latest]
    return PageJSON({"items": items, "next_cursor": None} if shape == "page" else items)


@router.get("/v1/meters/{meter_id}/readings", response_model=Page[ReadingOut], dependencies=READ,
            responses=_NOT_FOUND)
async def readings(store: StoreDep, now: NowDep, codes: CodesDep, meter_id: MeterPath, start: From = None, end: To = None,
                   channel: Annotated[Channel | None, Query(examples=["energy_import"])] = None,
                   status: Annotated[Status | None, Query(examples=["suspect"])] = None,
                   limit: Limit = 1000, cursor: Cursor = None) -> PageJSON:
    """Readings of one meter in [from, to) (default: the last 24 h), by time then channel."""
    start_, end_ = period(start, end, now, timedelta(days=1))
    after = decode_ts_key(cursor, str) if cursor else None
    rows = await store.readings(meter_id, start=start_, end=end_, channel=channel, status=status, limit=limit + 1,
                                after=after)
    if not rows:
        await require_meter(store, meter_id)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].ts.isoformat(), rows[-1].channel.value]) if more else None
    return await PageJSON.page(rows, codes.reading, next_cursor=nxt)


@router.get("/v1/readings/feed", response_model=FeedOut, dependencies=READ)
async def feed(store: StoreDep, codes: CodesDep,
               after: Annotated[str | None, Query(max_length=200, description="The `next_cursor` you stored; "
                                                  "leave out to start from the beginning",
                                                  examples=["WzQ4MjEzXQ"])] = None,
               limit: Annotated[int, Query(ge=1, le=10_000, description="Page size", examples=[1000])] = 1000,
               ) -> PageJSON:
    """Every new reading and every later status change, in ingest order, exactly once for a client that stores
    the cursor."""
    page = await store.feed(after=decode_seq(after), limit=limit)
    return await PageJSON.page(page.items, codes.reading, next_cursor=encode_cursor([page.next_after]),
                               more=len(page.items) >= limit)


@router.post("/v1/readings/verify", response_model=ReadingOut,
             responses={404: error("No such reading")})
async def verify(store: StoreDep, codes: CodesDep, key: WriteKey, body: VerifyIn) -> dict[str, Any]:
    """Mark a reading verified or rejected, with a note; it appears again in the feed. The status it has already
    changes nothing (same seq, no new history entry)."""
    reading = await store.set_status(body.meter_id, body.channel, utc(body.ts, "ts"), Status(body.status),
                                     note=body.note, by=key.name, key_id=key.key_id)
    return codes.reading(reading)


@router.post("/v1/readings/edit", response_model=ReadingOut,
             responses={422: error("No such reading, or a value that is not a number (`where` names the field); "
                                   "nothing is stored")})
async def edit(store: StoreDep, codes: CodesDep, key: WriteKey, body: EditIn) -> dict[str, Any]:
    """A person's corrected value of a stored reading (a misread register, a customer's photo), with a note: the
    reading takes the value and status `verified`, appears again in the feed (once), and its trail keeps the value
    and status it had, the note and the key (`GET .../readings/{channel}/{ts}/history`). The value it has already
    changes nothing."""
    at = utc(body.ts, "ts")
    try:
        reading = await store.edit_reading(body.meter_id, body.channel, at, body.value, note=body.note, by=key.name,
                                           key_id=key.key_id)
    except NotFound:
        if await store.get_meter(body.meter_id) is None:
            raise InvalidField("body.meter_id", f"no meter {body.meter_id!r}; nothing stored") from None
        msg = (f"meter {body.meter_id!r} has no {body.channel.value} reading at {at.isoformat()} to edit (an edit "
               "corrects a stored reading; a missing one is estimated or sent as a reading); nothing stored")
        raise InvalidField("body.ts", msg) from None
    except InvalidField as exc:
        raise InvalidField(f"body.{exc.field}", exc.detail) from exc
    return codes.reading(reading)


@router.get("/v1/meters/{meter_id}/readings/{channel}/{ts}/history", response_model=TrailOut, dependencies=READ,
            responses={404: error("No such reading")})
async def reading_trail(
    store: StoreDep, meter_id: MeterPath,
    channel: Annotated[Channel, Path(examples=["energy_import"])],
    ts: Annotated[Timestamp, Path(description="The reading's measurement time, ISO 8601 with zone (a '+' "
                                  "encoded as %2B)", examples=["2026-03-01T12:15:00Z"])],
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size", examples=[100])] = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """A reading's audit trail, oldest first: the reading as first recorded (by the meter, or by the estimator
    with its method, the real reads it was built from and its parameters, or with the VEE flags it got), then
    every verdict, edit and replaced estimate, each with who (the API key, or the source), when, the rule or
    method, and the value and status before. The original value is never lost."""
    after = decode_seq(cursor) if cursor else None
    at = utc(ts, "ts")
    first = after is None
    take = limit - 1 if first else limit  # the first page starts with the `recorded` entry
    fetched = await store.reading_history(meter_id, channel, at, limit=take + 1, after=after)
    changes = fetched[:take]
    origin = await store.reading_origin(meter_id, channel, at) if first else None
    nxt = encode_cursor([changes[-1].id if changes else 0]) if len(fetched) > take else None
    return {"items": trail_items(origin, changes), "next_cursor": nxt}


@router.get("/v1/meters/{meter_id}/readings/history", response_model=Page[HistoryEntryOut], dependencies=READ,
            responses={404: error("No such reading")})
async def reading_history(
    store: StoreDep, meter_id: MeterPath,
    channel: Annotated[Channel, Query(examples=["energy_import"])],
    ts: Annotated[Timestamp, Query(description="The reading's measurement time, ISO 8601 with zone",
                                   examples=["2026-03-01T12:15:00Z"])],
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size", examples=[100])] = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """A reading's history: every verdict (verified, rejected), edit and replaced estimate with its time, the
    status before and after, the note, and the API key that made it; oldest first. The whole trail, with the
    values before and after and the reading as first recorded: `GET .../readings/{channel}/{ts}/history`."""
    after = decode_seq(cursor) if cursor else None
    entries = await store.reading_history(meter_id, channel, utc(ts, "ts"), limit=limit + 1, after=after)
    more = len(entries) > limit
    entries = entries[:limit]
    return {"items": [HistoryEntryOut.row(e) for e in entries],
            "next_cursor": encode_cursor([entries[-1].id]) if more else None}


@router.get("/v1/meters/{meter_id}/consumption", response_model=ConsumptionOut, dependencies=READ,
            responses={**_NOT_FOUND,
                       422: error("A period that is reversed or has not begun (`where` names the parameter)")})
async def consumption(
    store: StoreDep, now: NowDep, meter_id: MeterPath, start: From = None, end: To = None,
    channel: Annotated[Channel | None, Query(description="A cumulative channel; default the meter's billing "
                                             "register", examples=["energy_import"])] = None,
    bucket: Annotated[str, Query(pattern="^(hour|day|month)$", examples=["day"])] = "day",
    tz: Annotated[str, Query(max_length=64, description="IANA time zone of the bucket boundaries; bucket start "
                             "and end are given in it, with their offset", examples=["Africa/Nairobi"])] = "UTC",
) -> dict[str, Any]:
    """Consumption per hour, day or month, rollover- and gap-aware, each bucket with its first and last read (the
    same reads as bills). A period that has not begun is refused (422); buckets after now have no value, and the
    answer says `complete: false` and `as_of` while the last bucket has not ended."""
    if start is not None:
        check_period(utc(start, "from"), None if end is None else utc(end, "to"), now, names=("from", "to"))
    start_, end_ = period(start, end, now, _DEFAULT_SPAN[bucket])
    check_period(start_, end_, now, names=("from", "to"))
    meter = await require_meter(store, meter_id)
    ch = channel or cumulative_channel(meter.utility)
    buckets = await store.consumption(meter_id, ch, start=start_, end=end_, bucket=bucket, tz=tz, now=now)
    zone = ZoneInfo(tz)  # the store has checked it
    last = buckets[-1]
    return {"meter_id": meter_id, "channel": ch.value, "unit": UNITS[ch], "bucket": bucket, "tz": tz,
            "start": buckets[0].start.astimezone(zone), "end": last.end.astimezone(zone), "complete": last.complete,
            "as_of": None if last.last_read is None else last.last_read.ts,
            "buckets": [BucketOut.row(b, zone) for b in buckets]}
