"""Assignments (move-in, move-out) and consumer numbers, with their billing reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from api.auth import RequireScope
from api.deps import ApiStore, NowDep, StoreDep, check_text_params
from api.params import Shape, utc
from api.routes.meters import MeterPath, require_meter
from api.schemas.accounts import AssignmentIn, AssignmentOut, ConsumerOut
from api.schemas.common import Identifier, Page, error
from api.schemas.meters import meter_dict
from api.schemas.readings import BillingMeterOut, BillingOut
from api.schemas.time import Timestamp
from gateway.errors import NotFound
from storage.boundary import check_period
from storage.keys import Scope
from storage.records import Consumer, cumulative_channel

router = APIRouter(tags=["consumers"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
WRITE = [Depends(RequireScope(Scope.WRITE))]

ConsumerPath = Annotated[Identifier, Path(description="The consumer (account) number", examples=["C-1001"])]


async def _consumer_out(store: ApiStore, consumer: Consumer) -> dict[str, Any]:
    history = await store.assignments(consumer_number=consumer.consumer_number)
    current = sorted({a.meter_id for a in history if a.end is None})
    meters = [m for m in [await store.get_meter(meter_id) for meter_id in current] if m is not None]
    return {"consumer_number": consumer.consumer_number, "active": consumer.active, "created_at": consumer.created_at,
            "deactivated_at": consumer.deactivated_at, "meters": [meter_dict(m) for m in meters],
            "assignments": [AssignmentOut.row(a) for a in history]}


@router.post("/v1/meters/{meter_id}/assignments", response_model=AssignmentOut, status_code=201, dependencies=WRITE,
             responses={404: error("No such meter"),
                        409: error("Deactivated consumer, a start that would rewrite history, or a start before the "
                                   "meter's installed_at")})
async def assign(store: StoreDep, now: NowDep, meter_id: MeterPath, body: AssignmentIn) -> dict[str, Any]:
    """Move-in: assign the meter to a consumer from `start`; the previous assignment is closed, and the boundary
    read at `start` (the last real billable cumulative read at or before it) is both its closing read and the new
    one's opening read. Both are derived from the readings whenever they are read."""
    assignment = await store.assign_meter(meter_id, body.consumer_number, start=utc(body.start, "start"), at=now)
    return AssignmentOut.row(assignment)


@router.get("/v1/meters/{meter_id}/assignments", response_model=Page[AssignmentOut] | list[AssignmentOut],
            dependencies=READ, responses={404: error("No such meter")})
async def meter_assignments(store: StoreDep, meter_id: MeterPath, shape: Shape = "page") -> Any:
    """The meter's assignment history, oldest first: one page (`next_cursor` is always null, a meter has one
    assignment per move-in)."""
    await require_meter(store, meter_id)
    items = [AssignmentOut.row(a) for a in await store.assignments(meter_id=meter_id)]
    return {"items": items, "next_cursor": None} if shape == "page" else items


@router.get("/v1/consumers/{consumer_number}", response_model=ConsumerOut, dependencies=READ,
            responses={404: error("No such consumer number")})
async def get_consumer(store: StoreDep, consumer_number: ConsumerPath) -> dict[str, Any]:
    """A consumer number: its meters now and its assignment history."""
    consumer = await store.get_consumer(consumer_number)
    if consumer is None:
        raise NotFound("consumer", consumer_number)
    return await _consumer_out(store, consumer)


@router.post("/v1/consumers/{consumer_number}/deactivate", response_model=ConsumerOut, dependencies=WRITE,
             responses={404: error("No such consumer number")})
async def deactivate_consumer(store: StoreDep, now: NowDep, consumer_number: ConsumerPath) -> dict[str, Any]:
    """Move-out of every meter of the consumer (closing reads taken now); it takes no new meters; history stays."""
    return await _consumer_out(store, await store.deactivate_consumer(consumer_number, at=now))


@router.get("/v1/consumers/{consumer_number}/billing", response_model=BillingOut, dependencies=READ,
            responses={404: error("No such consumer number"),
                       422: error("A period that is reversed or has not begun (`where` names the parameter)")})
async def billing(
    store: StoreDep, now: NowDep, consumer_number: ConsumerPath,
    start: Annotated[Timestamp, Query(alias="from", description="Period start, ISO 8601 with zone; not in the "
                                      "future", examples=["2026-03-01T00:00:00Z"])],
    end: Annotated[Timestamp, Query(alias="to", description="Period end, ISO 8601 with zone; a period that ends "
                                    "after now is measured up to now (complete: false)",
                                    examples=["2026-04-01T00:00:00Z"])],
) -> dict[str, Any]:
    """Billing reads of a consumer for a period: per meter it had then, the opening and closing read, the
    consumption between them, and the flags (with counts) of the period's reads. A period that has not begun is
    refused (422); one that has not ended is answered up to now with `complete: false` and `as_of`."""
    start_, end_ = utc(start, "from"), utc(end, "to")
    check_period(start_, end_, now, names=("from", "to"))
    if await store.get_consumer(consumer_number) is None:
        raise NotFound("consumer", consumer_number)
    parts = []
    for a in await store.assignments(consumer_number=consumer_number, reads=False):
        lo, hi = max(start_, a.start), min(end_, a.end or end_)
        if lo >= hi:
            continue  # this assignment lies outside the period
        meter = await require_meter(store, a.meter_id)
        parts.append(await store.billing_read(a.meter_id, cumulative_channel(meter.utility), start=lo, end=hi,
                                              now=now))
    return {"consumer_number": consumer_number, "start": start_, "end": end_, "from": start_, "to": end_,
            "meters": [BillingMeterOut.row(p) for p in parts], "estimated": any(p.estimated for p in parts),
            "suspect": any(p.suspect for p in parts), "complete": end_ <= now,
            "as_of": max((p.as_of for p in parts if p.as_of is not None), default=None)}
