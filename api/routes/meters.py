"""The meters registry: list and search, get, create, update, deactivate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query

from api.auth import RequireScope
from api.deps import ApiStore, NowDep, StoreDep, check_text_params
from api.pagination import decode_cursor, encode_cursor
from api.params import Cursor, Limit, utc
from api.schemas.common import Identifier, Page, error
from api.schemas.meters import MeterIn, MeterOut, MeterUpdate, meter_dict
from gateway.errors import InvalidRequest, NotFound
from gateway.model import Meter, MeterStatus, Utility
from storage.keys import Scope

router = APIRouter(prefix="/v1/meters", tags=["meters"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
WRITE = [Depends(RequireScope(Scope.WRITE))]

MeterPath = Annotated[Identifier, Path(description="The meter number", examples=["M-0001"])]
_CLEARABLE = frozenset({"device_number", "installed_at", "location", "tags"})
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("No such meter")}


async def require_meter(store: ApiStore, meter_id: str) -> Meter:
    meter = await store.get_meter(meter_id)
    if meter is None:
        raise NotFound("meter", meter_id)
    return meter


def to_meter(body: MeterIn) -> Meter:
    return Meter(meter_id=body.meter_id, utility=body.utility, protocol=body.protocol, address=body.address,
                 model=body.model, device_number=body.device_number, payg=body.payg, status=body.status,
                 installed_at=None if body.installed_at is None else utc(body.installed_at, "installed_at"),
                 consumer_number=body.consumer_number, location=body.location, tags=dict(body.tags))


@router.get("", response_model=Page[MeterOut], dependencies=READ)
async def list_meters(
    store: StoreDep,
    search: Annotated[str | None, Query(max_length=100, description="Part of a meter number, device number or "
                                        "consumer number (any case)", examples=["M-00"])] = None,
    status: Annotated[MeterStatus | None, Query(examples=["active"])] = None,
    utility: Annotated[Utility | None, Query(examples=["electricity"])] = None,
    payg: Annotated[bool | None, Query(examples=[True])] = None,
    consumer_number: Annotated[str | None, Query(max_length=64, examples=["C-1001"])] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:
    """Meters ordered by meter number, filtered and searched."""
    after = decode_cursor(cursor, 1)[0] if cursor else None
    if after is not None and not isinstance(after, str):
        raise InvalidRequest("cursor is not one this API issued")
    meters = await store.list_meters(search=search, limit=limit + 1, after=after, status=status, utility=utility,
                                     payg=payg, consumer_number=consumer_number)
    more = len(meters) > limit
    meters = meters[:limit]
    return {"items": [meter_dict(m) for m in meters],
            "next_cursor": encode_cursor([meters[-1].meter_id]) if more else None}


@router.post("", response_model=MeterOut, status_code=201, dependencies=WRITE,
             responses={409: error("The meter exists already, another meter of its utility has its device number "
                                   "(the message names it), or it has a consumer number and an installed_at in the "
                                   "future")})
async def create_meter(store: StoreDep, now: NowDep, body: MeterIn) -> dict[str, Any]:
    """Register a meter (and open its first assignment when it has a consumer number)."""
    await store.create_meters([to_meter(body)], at=now)
    return meter_dict(await require_meter(store, body.meter_id))


@router.get("/{meter_id}", response_model=MeterOut, dependencies=READ, responses=_NOT_FOUND)
async def get_meter(store: StoreDep, meter_id: MeterPath) -> dict[str, Any]:
    """One meter."""
    return meter_dict(await require_meter(store, meter_id))


@router.patch("/{meter_id}", response_model=MeterOut, dependencies=WRITE,
              responses={**_NOT_FOUND, 409: error("installed_at after some of the meter's readings (counted) or "
                                                  "after the start of one of its assignments, or another meter of its "
                                                  "utility has that device number (the message names it)")})
async def update_meter(store: StoreDep, now: NowDep, meter_id: MeterPath,
                       body: Annotated[MeterUpdate, Body(openapi_examples={
                           "move": {"summary": "New location and tags",
                                    "value": {"location": "14 Harbour Road", "tags": {"feeder": "F9"}}},
                           "maintenance": {"summary": "Out for maintenance", "value": {"status": "maintenance"}}})],
                       ) -> dict[str, Any]:
    """Change a meter's registry fields; the ones left out stay as they are."""
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name not in _CLEARABLE:
            msg = f"{name} cannot be null (leave it out to keep it)"
            raise InvalidRequest(msg)
    if changes.get("tags", {}) is None:
        changes["tags"] = {}
    if "status" in changes:
        changes["status"] = MeterStatus(changes["status"])
    if changes.get("installed_at") is not None:
        changes["installed_at"] = utc(changes["installed_at"], "installed_at")
    return meter_dict(await store.update_meter(meter_id, changes, at=now))


@router.post("/{meter_id}/deactivate", response_model=MeterOut, dependencies=WRITE, responses=_NOT_FOUND)
async def deactivate_meter(store: StoreDep, now: NowDep, meter_id: MeterPath) -> dict[str, Any]:
    """Take a meter out of service: status inactive, its open assignment closed with a closing read; history stays."""
    return meter_dict(await store.deactivate_meter(meter_id, at=now))
