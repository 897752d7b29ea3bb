"""IEC 61968-9 exports for account systems: MeterReadings and EndDeviceEvents as IEC 61968-100 replies.

Every answer is a ResponseMessage: a bad request is a FAILED reply with its Reply/Error (and a 4xx
status), never a JSON body an XML client cannot read. Pages are bounded by `limit`; the next page's
cursor is the Header Property `nextCursor` and the `X-Next-Cursor` header."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.auth import RequireScope
from api.cim.documents import (
    EVENTS_NS,
    PAYLOAD_CLOSE,
    PAYLOAD_OPEN,
    READINGS_NS,
    Envelope,
    ReplyError,
    end_device_event,
    failed,
    meter_reading,
    opening,
)
from api.cim.pages import fill, targets_of
from api.cim.request import RequestProblem, parse_get
from api.cim.tables import CimTables
from api.deps import NowDep, StoreDep, check_text_params
from api.guard import BodyLimit
from api.pagination import decode_cursor, encode_cursor
from api.params import Cursor, From, To, period
from api.schemas.common import ErrorOut
from gateway.errors import InvalidRequest, NotFound
from gateway.model import Channel
from gateway.model.events import EventKind
from gateway.model.meters import Meter
from storage.keys import Scope

router = APIRouter(tags=["cim"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
XML = "application/xml"
_XML_DOC = {200: {"content": {XML: {}}, "description": "An IEC 61968-100 ResponseMessage"},
            400: {"model": ErrorOut, "content": {XML: {}}, "description": "A FAILED reply saying what is wrong (XML); "
                  "JSON for a parameter the API's general checks refuse first (control characters)"},
            404: {"model": ErrorOut, "content": {XML: {}},
                  "description": "A FAILED reply naming the unknown meter or consumer"}}
#: The longest window one request may ask for (a month of 15-minute data of a meter is ~3,000 reads).
MAX_SPAN = timedelta(days=366)
#: The largest RequestMessage taken (1,000 selectors fit in a tenth of it).
MAX_REQUEST = 512 * 1024

MeterQ = Annotated[list[str] | None, Query(alias="meter", max_length=100, description="Meter number(s)",
                                           examples=[["M-0001"]])]
ConsumerQ = Annotated[str | None, Query(max_length=200, description="Consumer number: its meters while assigned to "
                                        "it, each in its share of the window", examples=["C-1001"])]


def _tables(request: Request) -> CimTables:
    tables: CimTables = request.app.state.cim_tables
    return tables


def _envelope(noun: str, now: datetime, **kw: object) -> Envelope:
    return Envelope(noun=noun, message_id=str(uuid.uuid4()), created=now, **kw)  # type: ignore[arg-type]


def _failure(noun: str, now: datetime, status: int, code: str, reason: str, *, xpath: str | None = None,
             correlation_id: str | None = None) -> Response:
    env = _envelope(noun, now, result="FAILED", errors=[ReplyError(code, reason, level="FATAL", xpath=xpath)],
                    correlation_id=correlation_id)
    return Response(failed(env), status_code=status, media_type=XML)


def _window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    start_, end_ = period(start, end, now, timedelta(days=1))
    if end_ - start_ > MAX_SPAN:
        msg = f"the window from {start_.isoformat()} to {end_.isoformat()} is longer than {MAX_SPAN.days} days"
        raise InvalidRequest(msg)
    if start_ >= now:
        msg = f"from ({start_.isoformat()}) is in the future"
        raise InvalidRequest(msg)
    return start_, end_


async def _stream(pieces: Iterator[str]) -> AsyncIterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= 64 * 1024:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    yield "".join(buffer).encode()


@router.get("/v1/cim/meter-readings", dependencies=READ, response_class=Response, responses=_XML_DOC)  # type: ignore[arg-type]
async def meter_readings(request: Request, store: StoreDep, now: NowDep, meter: MeterQ = None,
                         consumer: ConsumerQ = None, start: From = None, end: To = None,
                         channel: Annotated[Channel | None, Query(examples=["energy_import"])] = None,
                         intervals: Annotated[Literal["hour", "day", "month"] | None, Query(
                             description="Also consumption per hour, day or month as IntervalBlocks "
                                         "(deltaData ReadingTypes)")] = None,
                         limit: Annotated[int, Query(ge=1, le=100_000, description="Readings per document")] = 10_000,
                         cursor: Cursor = None) -> Response:
    """Readings of meters (or of a consumer's meters) in [from, to) as an IEC 61968-9 MeterReadings
    reply: one MeterReading per meter with its Meter and UsagePoint names, register reads as Readings
    with their ReadingType, ReadingQualities and values as the meter shows them."""
    return await _meter_readings(store, now, _tables(request), meters=meter or [], consumers=[consumer] if consumer
                                 else [], start=start, end=end, channels=frozenset({channel}) if channel else None,
                                 intervals=intervals, limit=limit, cursor=cursor)


@router.post("/v1/cim/get-meter-readings", dependencies=[*READ, Depends(BodyLimit(MAX_REQUEST))],
             response_class=Response, responses=_XML_DOC, openapi_extra={  # type: ignore[arg-type]
                 "requestBody": {"required": True, "content": {XML: {"schema": {"type": "string"}}}}})
async def get_meter_readings(request: Request, store: StoreDep, now: NowDep,
                             intervals: Annotated[Literal["hour", "day", "month"] | None, Query()] = None,
                             limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
                             cursor: Cursor = None) -> Response:
    """An IEC 61968-100 RequestMessage (verb `get`, noun `MeterReadings`) whose GetMeterReadings payload
    selects meters (EndDevice or Meter mRID/name), usage points (consumer numbers), ReadingTypes and a
    time window (Request StartTime/EndTime or TimeSchedule); answered as GET /v1/cim/meter-readings,
    with the request's MessageID as CorrelationID. DTDs and entities are refused."""
    tables = _tables(request)
    try:
        asked = parse_get(await request.body(), tables)
    except RequestProblem as exc:
        return _failure("MeterReadings", now, 400, "2.5", str(exc), xpath=exc.xpath)
    return await _meter_readings(store, now, tables, meters=list(asked.meters), consumers=list(asked.consumers),
                                 start=asked.start, end=asked.end, channels=asked.channels, intervals=intervals,
                                 limit=limit, cursor=cursor, correlation_id=asked.correlation_id)


async def _meter_readings(store: StoreDep, now: datetime, tables: CimTables, *, meters: list[str],
                          consumers: list[str], start: datetime | None, end: datetime | None,
                          channels: frozenset[Channel] | None, intervals: str | None, limit: int, cursor: str | None,
                          correlation_id: str | None = None) -> Response:
    noun = "MeterReadings"
    try:
        start_, end_ = _window(start, end, now)
        targets = await targets_of(store, meters, consumers, start_, end_)
        sections, next_cursor, warnings = await fill(store, targets, channels=channels, limit=limit, cursor=cursor,
                                                     tables=tables, intervals=intervals, now=now)
    except NotFound as exc:
        return _failure(noun, now, 404, "2.4", str(exc), correlation_id=correlation_id)
    except InvalidRequest as exc:
        return _failure(noun, now, 400, "2.5", str(exc), correlation_id=correlation_id)
    env = _envelope(noun, now, result="PARTIAL" if warnings else "OK", errors=warnings, next_cursor=next_cursor,
                    correlation_id=correlation_id)

    def pieces() -> Iterator[str]:
        yield opening(env, READINGS_NS)
        yield PAYLOAD_OPEN[noun]
        for s in sections:
            yield from meter_reading(s.target.meter, s.target.usage_point, s.readings, s.blocks, tables, s.reasons)
        yield PAYLOAD_CLOSE[noun]

    headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
    return StreamingResponse(_stream(pieces()), media_type=XML, headers=headers)


@router.get("/v1/cim/end-device-events", dependencies=READ, response_class=Response, responses=_XML_DOC)  # type: ignore[arg-type]
async def end_device_events(request: Request, store: StoreDep, now: NowDep,
                            meter: Annotated[str | None, Query(max_length=200, examples=["M-0001"])] = None,
                            kind: Annotated[EventKind | None, Query(examples=["relay_disconnected"])] = None,
                            start: From = None, end: To = None,
                            limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                            cursor: Cursor = None) -> Response:
    """Meters' events in [from, to), most recent first, as an IEC 61968-9 EndDeviceEvents reply with
    EndDeviceEventType codes from the table (the gateway's own events, such as spool or process
    events, are not end-device events and are left out)."""
    noun = "EndDeviceEvents"
    tables = _tables(request)
    try:
        start_, end_ = _window(start, end, now)
        if meter is not None and await store.get_meter(meter) is None:
            raise NotFound("meter", meter)
        before = None
        if cursor:
            ts, seq = decode_cursor(cursor, 2)
            if not isinstance(ts, str) or not isinstance(seq, int):
                raise InvalidRequest("cursor does not belong to this query")
            before = (datetime.fromisoformat(ts), seq)
        page = await store.events_page(meter_id=meter, kind=kind, start=start_, end=end_, limit=limit + 1,
                                       before=before)
    except NotFound as exc:
        return _failure(noun, now, 404, "2.4", str(exc))
    except (InvalidRequest, ValueError) as exc:
        return _failure(noun, now, 400, "2.5", str(exc))
    more = len(page) > limit
    page = page[:limit]
    next_cursor = encode_cursor([page[-1].event.ts.isoformat(), page[-1].seq]) if more and page else None
    meters: dict[str, Meter | None] = {}
    for stored in page:
        mid = stored.event.meter_id
        if mid is not None and mid not in meters:
            meters[mid] = await store.get_meter(mid)
    env = _envelope(noun, now, next_cursor=next_cursor)

    def pieces() -> Iterator[str]:
        yield opening(env, EVENTS_NS)
        yield PAYLOAD_OPEN[noun]
        for stored in page:
            e = stored.event
            owner = meters.get(e.meter_id) if e.meter_id else None
            code = tables.event_type(e.kind, owner.utility if owner else None)
            if code is None or e.meter_id is None:
                continue
            yield end_device_event(stored, owner, code)
        yield PAYLOAD_CLOSE[noun]

    headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
    return StreamingResponse(_stream(pieces()), media_type=XML, headers=headers)
