"""Special reads: a meter read now at the account system's request, with a reason (inquiry, move-out,
move-in, service connect/disconnect), stored as a real reading."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from api.auth import RequireScope, WriteKey
from api.deps import GatewayDep, StoreDep, check_text_params
from api.routes.meters import MeterPath, require_meter
from api.schemas.common import error
from api.schemas.reads import ReadIn, ReadOut
from gateway.errors import NotFound
from storage.keys import Scope
from storage.records import Conflict

router = APIRouter(tags=["special reads"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
CorrelationPath = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                      examples=["0b9f0c8e-3f55-4f0e-9a8e-2f1d6c1b7a10"])]


@router.post("/v1/meters/{meter_id}/reads", response_model=ReadOut, status_code=202,
             responses={202: {"description": "Queued: follow it at /v1/reads/{correlation_id}"},
                        404: error("No such meter"),
                        409: error("The meter is inactive, a read of it is already under way, or this API runs "
                                   "without the gateway that reads the meters")})
async def request_read(store: StoreDep, gateway: GatewayDep, key: WriteKey, meter_id: MeterPath,
                       body: ReadIn) -> dict[str, Any]:
    """Read the meter now (a polled meter through its driver, a meter that pushes from its latest message
    no older than `[special_reads] max_age`); the values are stored as real readings, VEE-checked, in the
    feed once, and carry the reason in the CIM export. Take a move-out's closing read at the read's `ts`."""
    await require_meter(store, meter_id)
    if gateway is None:
        raise Conflict("this API runs without the gateway that reads the meters: special reads need it")
    read = await gateway.special_read(meter_id, body.reason, body.channels, key.key_id)
    return ReadOut.row(read)


@router.get("/v1/reads/{correlation_id}", response_model=ReadOut, dependencies=READ,
            responses={404: error("No such special read")})
async def get_read(store: StoreDep, correlation_id: CorrelationPath) -> dict[str, Any]:
    """A special read's state, values and who asked (its audit record)."""
    read = await store.get_special_read(correlation_id)
    if read is None:
        raise NotFound("special read", correlation_id)
    return ReadOut.row(read)
