"""Technicians' diagnostics under /v1/diag (the `diag` scope): status, fleet, one meter, poll now,
raw register reads, recent payloads, events and dead letters, answered from the running gateway."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from api.auth import RequireScope
from api.deps import GatewayDep
from api.errors import error_body
from api.ports import GatewayPort
from api.ratelimit import BusLimiter
from api.schemas.common import ErrorOut, Identifier
from api.schemas.diag import (
    DeadLetterOut,
    DeadLettersOut,
    DiagEventOut,
    EventsOut,
    FleetOut,
    GatewayStatusOut,
    MeterDiagnosticsOut,
    MeterErrorOut,
    MeterSummaryOut,
    PayloadOut,
    PollResultOut,
    RegistersOut,
)
from api.schemas.diag_dlms import AttributeIn, AttributeOut
from gateway.errors import DriverError, InvalidRequest, MeterTimeout, ModbusExceptionResponse, NotFound
from gateway.model.health import MeterState
from gateway.model.profiles import Function

router = APIRouter(prefix="/v1/diag", tags=["diagnostics"], dependencies=[Depends(RequireScope("diag"))])

MAX_REGISTERS = 125  # per FC 03/04 request (Modbus Application Protocol V1.1b3)


def running_gateway(gateway: GatewayDep) -> GatewayPort:
    if gateway is None:
        raise HTTPException(503, "diagnostics need the running gateway; this API serves stored data only")
    return gateway


Gateway = Annotated[GatewayPort, Depends(running_gateway)]
MeterId = Annotated[Identifier, Path(description="Meter number, e.g. M-0001")]
_METER_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such meter (or endpoint) in the configuration"},
    429: {"model": ErrorOut, "description": "Too many reads on this bus; retry after `Retry-After` seconds"},
    502: {"model": MeterErrorOut, "description": "The meter answered with an error (exception code, garbage)"},
    504: {"model": MeterErrorOut, "description": "The meter did not answer in time"},
}


def _limiter(request: Request) -> BusLimiter:
    limiter: BusLimiter = request.app.state.bus_limiter
    return limiter


def _throttled(limiter: BusLimiter, endpoint: str) -> JSONResponse | None:
    wait = limiter.take(endpoint)
    if wait <= 0:
        return None
    seconds = max(1, round(wait + 0.5))
    msg = (f"endpoint {endpoint}: technicians' reads are limited to {limiter.rate:g} per second "
           f"(burst {limiter.burst}) so the bus keeps its polling schedule; retry in {seconds} s")
    return JSONResponse(status_code=429, headers={"Retry-After": str(seconds)}, content=error_body("rate_limited", msg))


def _meter_error(exc: DriverError) -> JSONResponse:
    body = MeterErrorOut(error="meter_error", kind=exc.kind, message=str(exc), meter_id=exc.meter_id, where=exc.where,
                         code=exc.code if isinstance(exc, ModbusExceptionResponse) else None)
    return JSONResponse(status_code=504 if isinstance(exc, MeterTimeout) else 502, content=body.model_dump())


@router.get("/status", response_model=GatewayStatusOut)
async def status(gateway: Gateway) -> GatewayStatusOut:
    """Drivers and their connections, polls and messages per second, errors by kind, spool, sink,
    readiness, meters by state, latest events, version, uptime, config file and its hash."""
    readiness = await gateway.readiness()
    events, from_store = await gateway.recent_events(limit=10)
    return GatewayStatusOut.of((await gateway.status(per_meter=False)), readiness, events, from_store)


@router.get("/meters", response_model=FleetOut)
async def fleet(gateway: Gateway, state: MeterState | None = None) -> FleetOut:
    """Every configured meter with its state and last-seen time, worst first."""
    meters = await gateway.fleet()
    counts = {s.value: 0 for s in MeterState}
    for m in meters:
        counts[m.state.value] += 1
    return FleetOut(counts=counts, meters=[MeterSummaryOut.of(m) for m in meters if state is None or m.state is state])


@router.get("/meters/{meter_id}", response_model=MeterDiagnosticsOut, responses={404: _METER_ERRORS[404]})
async def meter(gateway: Gateway, meter_id: MeterId) -> MeterDiagnosticsOut:
    """One meter: last attempt and success, latency p50/p95, consecutive failures, last error with its kind
    and time, last raw registers (Modbus) or payloads (MQTT), recent readings with flags, open events."""
    return MeterDiagnosticsOut.of_diag(await gateway.meter_diagnostics(meter_id))


@router.get("/meters/{meter_id}/payloads", response_model=list[PayloadOut], responses={404: _METER_ERRORS[404]})
async def payloads(gateway: Gateway, meter_id: MeterId) -> list[PayloadOut]:
    """The last MQTT payloads of a PAYG meter as received, newest last."""
    return [PayloadOut.of(p) for p in (await gateway.recent_payloads(meter_id))]


@router.post("/meters/{meter_id}/poll", response_model=PollResultOut, responses=_METER_ERRORS)
async def poll_now(gateway: Gateway, limiter: Annotated[BusLimiter, Depends(_limiter)],
                   meter_id: MeterId) -> PollResultOut | JSONResponse:
    """Poll a meter now (Modbus), past its schedule and circuit breaker: the decoded values with the raw
    registers. Nothing is stored (the schedule's polls are the data). Rate-limited per bus."""
    summary = await gateway.meter_summary(meter_id)
    if summary.endpoint is None:
        kind = f"PAYG, {summary.protocol}" if summary.balances else summary.protocol
        msg = f"meter {meter_id} ({kind}) pushes its data: it cannot be polled; see its recent payloads"
        raise InvalidRequest(msg)
    throttled = _throttled(limiter, summary.endpoint)
    if throttled is not None:
        return throttled
    try:
        return PollResultOut.of(await gateway.poll_now(meter_id))
    except DriverError as exc:
        return _meter_error(exc)


def _register_address(value: str) -> int:
    try:
        address = int(value, 0)
    except ValueError:
        msg = f"address={value!r}: give a register number, decimal (342) or hex (0x0156)"
        raise InvalidRequest(msg) from None
    if not 0 <= address <= 0xFFFF:
        msg = f"address={value}: registers are numbered 0..65535 (0x0000..0xffff)"
        raise InvalidRequest(msg)
    return address


@router.get("/endpoints/{endpoint}/registers", response_model=RegistersOut, responses=_METER_ERRORS)
async def read_registers(
    gateway: Gateway, limiter: Annotated[BusLimiter, Depends(_limiter)],
    endpoint: Annotated[str, Path(max_length=64, description="A configured Modbus endpoint (bus)")],
    unit: Annotated[int, Query(ge=1, le=247, description="Modbus device id")],
    address: Annotated[str, Query(max_length=10, description="First register, decimal or 0x hex")],
    count: Annotated[int, Query(ge=1, le=MAX_REGISTERS, description="Registers to read")] = 2,
    function: Annotated[Function, Query(description="holding (FC 03) or input (FC 04); nothing else: read-only")] =
    Function.HOLDING,
) -> RegistersOut | JSONResponse:
    """Read raw registers of any unit on a configured endpoint (read-only function codes, at most 125
    registers). Rate-limited per bus."""
    first = _register_address(address)
    if first + count > 0x10000:
        msg = f"address {first:#06x} + count {count} runs past the last register (0xffff)"
        raise InvalidRequest(msg)
    if endpoint not in {m.endpoint for m in (await gateway.fleet()) if m.endpoint is not None}:
        raise NotFound("modbus endpoint", endpoint)  # checked first: only real buses get a bucket
    throttled = _throttled(limiter, endpoint)
    if throttled is not None:
        return throttled
    try:
        got = await gateway.read_raw(endpoint, {"unit": unit, "function": function, "address": first, "count": count})
    except DriverError as exc:
        return _meter_error(exc)
    return RegistersOut(endpoint=endpoint, unit=unit, function=function.value, address=first, count=count,
                        words=list(got["words"]), hex=[f"{w:#06x}" for w in got["words"]])


@router.post("/meters/{meter_id}/attribute", response_model=AttributeOut, responses=_METER_ERRORS)
async def read_attribute(gateway: Gateway, limiter: Annotated[BusLimiter, Depends(_limiter)], meter_id: MeterId,
                         body: AttributeIn) -> AttributeOut | JSONResponse:
    """Read one COSEM attribute of a DLMS meter in its own association (e.g. `{"obis": "1-0:1.8.0.255",
    "class_id": 3, "attribute": 2}`): the decoded value, scaled for a register, and the raw A-XDR in hex.
    Read-only; attributes holding secrets are refused. Rate-limited per endpoint like raw register reads."""
    summary = await gateway.meter_summary(meter_id)
    if summary.protocol != "dlms" or summary.endpoint is None:
        msg = (f"meter {meter_id} ({summary.protocol}) has no COSEM attributes: attribute reads are for DLMS meters"
               + (f"; read its registers on endpoint {summary.endpoint}" if summary.endpoint else ""))
        raise InvalidRequest(msg)
    throttled = _throttled(limiter, summary.endpoint)
    if throttled is not None:
        return throttled
    try:
        got = await gateway.read_raw(summary.endpoint, {"meter_id": meter_id, **body.model_dump()})
    except DriverError as exc:
        return _meter_error(exc)
    return AttributeOut.model_validate({**got, "endpoint": summary.endpoint})


@router.get("/deadletters", response_model=DeadLettersOut)
async def deadletters(
    gateway: Gateway,
    meter_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64, examples=["malformed_json"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLettersOut:
    """Input that could not become data, newest first, with its payload and the reason."""
    items, reachable = await gateway.deadletters(meter_id=meter_id, reason=reason, limit=limit)
    return DeadLettersOut(items=[DeadLetterOut.of(d) for d in items], store_reachable=reachable)


@router.get("/events", response_model=EventsOut)
async def events(
    gateway: Gateway,
    meter_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> EventsOut:
    """The latest events (comm lost and restored, anomalies, PAYG, spool), newest first."""
    items, reachable = await gateway.recent_events(meter_id=meter_id, limit=limit)
    return EventsOut(items=[DiagEventOut.of(e) for e in items], store_reachable=reachable)
