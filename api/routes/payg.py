"""PAYG: balances of a meter, the fleet's totals, commands (top-up, disconnect, reconnect)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response

from api.auth import RequireScope
from api.deps import GatewayDep, NowDep, StoreDep, check_text_params
from api.pagination import encode_cursor
from api.params import Cursor, From, Limit, Shape, To, decode_ts_key, period
from api.routes.meters import MeterPath, require_meter
from api.schemas.common import Page, error
from api.schemas.payg import BalanceOut, CommandIn, CommandOut, CurrencyTotals, PaygSummary
from gateway.errors import InvalidField, NotFound
from gateway.model import CommandKind
from gateway.model.commands import MAX_KEY
from storage.keys import Scope
from storage.records import Conflict

router = APIRouter(tags=["payg"], dependencies=[Depends(check_text_params)])
READ = [Depends(RequireScope(Scope.READ))]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("No such meter, or no balance yet")}


@router.get("/v1/meters/{meter_id}/balance", response_model=BalanceOut, dependencies=READ, responses=_NOT_FOUND)
async def latest_balance(store: StoreDep, meter_id: MeterPath) -> dict[str, Any]:
    """The latest PAYG balance the meter reported."""
    await require_meter(store, meter_id)
    bal = await store.latest_balance(meter_id)
    if bal is None:
        raise NotFound("balance of meter", meter_id)
    return BalanceOut.row(bal)


@router.get("/v1/meters/{meter_id}/balances", response_model=Page[BalanceOut], dependencies=READ,
            responses=_NOT_FOUND)
async def balances(store: StoreDep, now: NowDep, meter_id: MeterPath, start: From = None, end: To = None,
                   limit: Limit = 1000, cursor: Cursor = None) -> dict[str, Any]:
    """The meter's balance history in [from, to) (default: the last 30 days), oldest first."""
    await require_meter(store, meter_id)
    start_, end_ = period(start, end, now, timedelta(days=30))
    if cursor:
        # Balances are unique on (meter, ts): the last ts of the page is the key.
        last, _ = decode_ts_key(cursor, int)
        start_ = max(start_, last + timedelta(microseconds=1))
    rows = await store.balances(meter_id, start=start_, end=end_, limit=limit + 1) if start_ < end_ else []
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [BalanceOut.row(b) for b in rows],
            "next_cursor": encode_cursor([rows[-1].ts.isoformat(), 0]) if more else None}


@router.get("/v1/payg/summary", response_model=PaygSummary, dependencies=READ)
async def summary(store: StoreDep) -> dict[str, Any]:
    """The PAYG fleet: total balance per currency, and how many meters are low on credit, on emergency credit or
    disconnected."""
    totals = await store.payg_totals()
    return {"currencies": [CurrencyTotals.row(t) for t in totals], "low_credit": sum(t.low_credit for t in totals),
            "emergency_credit": sum(t.emergency_credit for t in totals),
            "disconnected": sum(t.disconnected for t in totals)}


#: A client's key for a command it has no reference for (a UUID, a request id): identifier-like, bounded.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+/=-]*$"
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=MAX_KEY, pattern=KEY_PATTERN,
    description=("For a client without a reference: the same key again returns the command sent under it (200) "
                 "instead of sending another; a different body under it is a 409. With a reference too, the "
                 "command holds both keys. 1-200 of A-Z a-z 0-9 . _ : + / = -, starting with a letter or digit."),
    examples=["4f9c2a7e-5b1d-4c83-9a60-2f7d0e1b3c55"])]
#: Where each field the command path checks is in the request.
_FIELD = {"amount": "body.amount", "Idempotency-Key": "header.Idempotency-Key"}


@router.post("/v1/meters/{meter_id}/commands", response_model=CommandOut, status_code=202,
             dependencies=[Depends(RequireScope(Scope.WRITE))],
             responses={200: {"model": CommandOut,
                              "description": "A repeat: the command already sent under this reference or "
                                             "Idempotency-Key, with its status now; nothing was sent again",
                              "headers": {"Idempotent-Replayed": {
                                  "description": "true: this answer is the stored command, not a new one",
                                  "schema": {"type": "string", "enum": ["true"]}}}},
                        202: {"description": "Sent: the new command, pending until the meter answers"},
                        404: error("No such PAYG meter"),
                        409: error("This gateway has no MQTT command path, or the reference or Idempotency-Key "
                                   "already names a command with another body (the message says what differs); "
                                   "nothing was sent"),
                        422: error("Invalid body or header, e.g. an amount with more decimals than its currency "
                                   "allows; nothing was sent"),
                        503: error("The broker or the store cannot be reached now; nothing was sent")})
async def send_command(store: StoreDep, gateway: GatewayDep, meter_id: MeterPath, body: CommandIn,
                       response: Response, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    """Send a top-up, disconnect or reconnect to a PAYG meter; follow it at /v1/commands/{correlation_id}.

    Sent once per key: the `reference` (a receipt number names one payment, in the whole store) and the
    `Idempotency-Key` header (for clients without a reference). Posting it again, at once, concurrently or
    after a restart, returns the command already sent (200, `Idempotent-Replayed: true`) and sends nothing;
    a different body under the same key is a 409. Without either every post is a new command."""
    meter = await require_meter(store, meter_id)
    if not meter.payg:
        raise NotFound("PAYG meter", meter_id)
    if gateway is None or not gateway.commands_available():
        msg = ("this gateway cannot send PAYG commands: it has no MQTT connection with commands enabled "
               "(mqtt.enabled and mqtt.commands in its configuration, and PAYG meters configured)")
        raise Conflict(msg)
    try:
        sent = await gateway.submit_command(meter_id, CommandKind(body.kind), amount=body.amount,
                                            reference=body.reference, idempotency_key=idempotency_key,
                                            token=body.token)
    except InvalidField as exc:
        raise InvalidField(_FIELD.get(exc.field, exc.field), exc.detail) from exc
    if sent.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return CommandOut.row(sent.command)


@router.get("/v1/meters/{meter_id}/commands", response_model=Page[CommandOut] | list[CommandOut], dependencies=READ,
            responses={404: error("No such meter")})
async def meter_commands(store: StoreDep, meter_id: MeterPath, limit: Limit = 100, cursor: Cursor = None,
                         shape: Shape = "page") -> Any:
    """The meter's commands, most recent first, a page at a time (`shape=array`: the first page as a bare array)."""
    await require_meter(store, meter_id)
    before = decode_ts_key(cursor, str) if cursor else None
    found = await store.commands(meter_id=meter_id, limit=limit + 1, before=before)
    items = [CommandOut.row(c) for c in found[:limit]]
    if shape == "array":
        return items
    last = found[limit - 1] if len(found) > limit else None
    return {"items": items,
            "next_cursor": None if last is None else encode_cursor([last.created_at.isoformat(), last.correlation_id])}


@router.get("/v1/commands/{correlation_id}", response_model=CommandOut, dependencies=READ,
            responses={404: error("No such command")})
async def get_command(store: StoreDep, gateway: GatewayDep,
                      correlation_id: Annotated[str, Path(max_length=100, examples=["gw1-7f3a9c2e"])]
                      ) -> dict[str, Any]:
    """A command's status: pending until the meter answers, then acknowledged or failed (or timed out)."""
    if gateway is not None:
        return CommandOut.row(await gateway.get_command(correlation_id))
    command = await store.get_command(correlation_id)
    if command is None:
        raise NotFound("command", correlation_id)
    return CommandOut.row(command)
