"""PAYG commands to DLMS meters: disconnect and reconnect through Disconnect control (class 70), and
prepayment tokens through the Token gateway (class 115).

`POST /v1/meters/{id}/commands` reaches `DlmsCommands.submit` (the runtime's CommandDesk finds it as
the `Commanding` driver that serves the meter). The command is claimed in the store (once per
reference / Idempotency-Key, as over MQTT), returned PENDING, and carried out in this driver's
task: one association through the meter's poller (under its bus lock, with its client SAP and
security), ACTION remote_disconnect (method 1) or remote_reconnect (method 2), then GET
output_state (attribute 2) and control_state (attribute 3). It is ACKNOWLEDGED when the action
succeeded and the read-back state is the one asked for (a reconnect may leave the meter
"ready for reconnection": the customer closes the relay, as its control mode says), FAILED
otherwise, with what the meter said in the detail. A token (kind token, digits only) is passed
as it came to the Token gateway's enter (method 1) and its token_status (attribute 6) read back:
acknowledged when executed, failed otherwise (a reused token: validation failure); the token and
that result are the command's detail ("token <digits>: executed"). Every status is saved in the commands table
and each settled command is an Event of kind `command`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from dlms_cosem import cosem, dlms_data, enumerations
from dlms_cosem.protocol import xdlms

from drivers.base import CommandPorts, DriverStatus, Observed
from drivers.dlms import axdr
from drivers.dlms.cosem import obis_bytes
from drivers.dlms.errors import AccessError, FrameError
from drivers.dlms.poller import DlmsPoller
from drivers.dlms.session import Session
from drivers.polling.health import MeterHealth
from gateway.errors import DriverError, InvalidRequest, KeyConflict, NotFound
from gateway.model import BalanceUpdate, Command, CommandKind, CommandStatus, Event, EventKind, Severity, Submission
from gateway.model.payg import Relay
from gateway.model.samples import Sample

log = logging.getLogger(__name__)
Emit = Callable[[Sample], Awaitable[None]]

DISCONNECT_CONTROL = "0-0:96.3.10.255"
#: control_state (attribute 3) of class 70.
CONTROL_STATES = {0: "disconnected", 1: "connected", 2: "ready for reconnection"}
_METHOD = {CommandKind.DISCONNECT: 1, CommandKind.RECONNECT: 2}
TOKEN_GATEWAY = "0-0:19.40.0.255"
CREDIT, ACCOUNT = "0-0:19.10.0.255", "0-0:19.0.0.255"
#: token_status (attribute 6) of class 115, Blue Book.
TOKEN_STATUS = {0: "format ok", 1: "authentication ok", 2: "validation ok", 3: "executed",
                4: "format failure", 5: "authentication failure", 6: "validation failure (used or not for this meter)",
                7: "execution failure", 8: "received, not yet processed"}
#: Settled commands kept in memory for GET /v1/commands (the store keeps all).
MAX_TRACKED = 1000


async def disconnect_control(session: Session, method: int) -> tuple[bool, str]:
    """ACTION `method` on Disconnect control, then read back its state: (as asked, what the meter says)."""
    target = cosem.CosemMethod(enumerations.CosemInterface.DISCONNECT_CONTROL,
                               cosem.Obis.from_bytes(obis_bytes(DISCONNECT_CONTROL)), method)
    # Session has no ACTION of its own (the poller only reads); its request path maps every way the
    # meter can fail us to the driver's typed errors.
    answer = await session._request(xdlms.ActionRequestNormal(
        cosem_method=target, data=dlms_data.IntegerData(0).to_bytes()))
    name = "remote_disconnect" if method == 1 else "remote_reconnect"
    status = getattr(answer, "status", None)
    if not isinstance(answer, (xdlms.ActionResponseNormal, xdlms.ActionResponseNormalWithData,
                               xdlms.ActionResponseNormalWithError)):
        raise FrameError(session.meter_id, session.where, f"{name}: unexpected {type(answer).__name__}",
                         session.last_raw)
    if status is not enumerations.ActionResultStatus.SUCCESS:
        said = str(getattr(status, "name", status)).lower().replace("_", " ")
        return False, f"{name} refused by the meter: {said}"
    output = axdr.decode(await session.get(70, obis_bytes(DISCONNECT_CONTROL), 2))
    control = axdr.decode(await session.get(70, obis_bytes(DISCONNECT_CONTROL), 3))
    if not isinstance(output, bool) or not isinstance(control, int):
        raise FrameError(session.meter_id, session.where, f"disconnect control state {output!r}, {control!r}",
                         session.last_raw)
    state = CONTROL_STATES.get(control, f"control state {control}")
    said = f"output_state {'connected' if output else 'disconnected'}, control_state {state}"
    ok = (not output and control == 0) if method == 1 else control in (1, 2)
    return ok, said


async def enter_token(session: Session, token: str) -> tuple[bool, str]:
    """ACTION enter (method 1) on the Token gateway with the token as it came, then its token_status
    (attribute 6): (executed, what the meter says)."""
    target = cosem.CosemMethod(enumerations.CosemInterface(115), cosem.Obis.from_bytes(obis_bytes(TOKEN_GATEWAY)), 1)
    answer = await session._request(xdlms.ActionRequestNormal(
        cosem_method=target, data=dlms_data.OctetStringData(token.encode("ascii")).to_bytes()))
    status = getattr(answer, "status", None)
    if status is not enumerations.ActionResultStatus.SUCCESS:
        said = str(getattr(status, "name", status)).lower().replace("_", " ")
        return False, f"token {token}: enter refused by the meter: {said}"
    result = axdr.decode(await session.get(115, obis_bytes(TOKEN_GATEWAY), 6))
    code = result[0] if isinstance(result, tuple) and result and isinstance(result[0], int) else None
    if code is None:
        raise FrameError(session.meter_id, session.where, f"token_status {result!r:.60}", session.last_raw)
    return code == 3, f"token {token}: {TOKEN_STATUS.get(code, f'token status {code}')}"


async def read_balance(session: Session, meter_id: str, now: datetime) -> BalanceUpdate | None:
    """The credit as a PAYG balance: Credit current_credit_amount (class 112, attribute 2) in the
    Account's currency (class 111, attribute 13: name, scale), with the relay of Disconnect control
    where it has one; None for a meter without the prepayment objects."""
    try:
        amount = axdr.decode(await session.get(112, obis_bytes(CREDIT), 2))
        currency = axdr.decode(await session.get(111, obis_bytes(ACCOUNT), 13))
    except AccessError:
        return None
    if (isinstance(amount, bool) or not isinstance(amount, int) or not isinstance(currency, tuple)
            or len(currency) < 2 or not isinstance(currency[0], str) or not isinstance(currency[1], int)):
        raise FrameError(meter_id, session.where, f"credit {amount!r:.40} in currency {currency!r:.60}",
                         session.last_raw)
    relay = None
    try:
        output = axdr.decode(await session.get(70, obis_bytes(DISCONNECT_CONTROL), 2))
        relay = (Relay.CONNECTED if output else Relay.DISCONNECTED) if isinstance(output, bool) else None
    except AccessError:
        pass
    return BalanceUpdate(meter_id=meter_id, ts=now, balance=Decimal(amount).scaleb(currency[1]), currency=currency[0],
                         relay=relay, credit_exhausted=amount <= 0, received_at=now)


class DlmsCommands:
    """The DLMS meters' command sender and the driver that carries commands out (`commands` is itself)."""

    def __init__(self, pollers: Iterable[DlmsPoller], payg: Iterable[str], ports: CommandPorts, emit: Emit, *,
                 intervals: Mapping[str, float] | None = None, origin: str = "",
                 clock: Callable[[], datetime] | None = None) -> None:
        #: Seconds between credit reads of each meter (its poll interval).
        self._intervals = dict(intervals or {})
        self._by_meter = {m: p for p in pollers for m in p.meter_ids()}
        self._payg = frozenset(m for m in payg if m in self._by_meter)
        self._ports = ports
        self._emit = emit
        self._origin = origin
        self._clock = clock or (lambda: datetime.now(UTC))
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._commands: OrderedDict[str, Command] = OrderedDict()
        self.by_status: dict[str, int] = {s.value: 0 for s in CommandStatus}

    # -- the driver contract -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "dlms:commands"

    @property
    def target(self) -> str:
        return "dlms commands"

    def meter_ids(self) -> tuple[str, ...]:
        return ()  # its meters are their pollers'

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        return None

    def status(self, observed: Observed) -> DriverStatus:
        return DriverStatus(label="dlms commands", where="disconnect control", connected=True, rate=0.0,
                            rate_unit="commands/s", errors_by_kind={}, meters=len(self._payg),
                            detail={"by_status": dict(self.by_status), "queued": self._queue.qsize()})

    @property
    def commands(self) -> DlmsCommands | None:
        return self if self._payg else None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for meter_id in sorted(self._payg):
                tg.create_task(self._credit_loop(meter_id), name=f"dlms credit {meter_id}")
            tg.create_task(self._commands_loop(), name="dlms commands")

    async def _credit_loop(self, meter_id: str) -> None:
        """The credit at start, then every poll interval (commands read it too, at once)."""
        while True:
            try:
                balance = await self._by_meter[meter_id].in_session(
                    meter_id, lambda s, _r: read_balance(s, meter_id, self._clock()))
            except (DriverError, axdr.DataError) as exc:
                log.info("meter %s: credit not read: %s", meter_id, exc, extra={"meter_id": meter_id})
            else:
                if balance is None:
                    return  # no prepayment objects: nothing to follow
                await self._emit(balance)
            await asyncio.sleep(self._intervals.get(meter_id, 900.0))

    async def _commands_loop(self) -> None:
        while True:
            command = await self._queue.get()
            try:
                await self._carry_out(command)
            except Exception as exc:  # the store refused the outcome: logged, the next command goes on
                log.warning("command %s to meter %s: outcome not recorded: %s", command.correlation_id,
                            command.meter_id, exc)

    # -- CommandSender -----------------------------------------------------------------------------
    def serves(self, meter_id: str) -> bool:
        return meter_id in self._payg

    def get(self, correlation_id: str) -> Command | None:
        return self._commands.get(correlation_id)

    def restore(self, commands: Iterable[Command]) -> int:
        """A DLMS command still PENDING from before a restart was cut off mid-association: nothing
        says whether the meter carried it out, so it is not sent again (the store keeps it)."""
        return 0

    async def submit(self, meter_id: str, kind: CommandKind | str, *, amount: Decimal | None = None,
                     reference: str | None = None, key: str | None = None,
                     token: str | None = None) -> Submission:
        try:
            kind = CommandKind(kind)
        except ValueError:
            raise InvalidRequest(f"unknown command {kind!r} for meter {meter_id}") from None
        if meter_id not in self._payg:
            raise NotFound("PAYG meter", meter_id)
        if kind not in _METHOD and kind is not CommandKind.TOKEN:
            raise InvalidRequest(f"{kind.value} of DLMS meter {meter_id}: a DLMS meter takes disconnect, "
                                 "reconnect and token (a top-up is a token)")
        if (kind is CommandKind.TOKEN) != (token is not None) or (token is not None and not token.isdigit()):
            raise InvalidRequest(f"{kind.value} of meter {meter_id}: a token command takes a token of digits, "
                                 "and only it")
        if amount is not None:
            raise InvalidRequest(f"{kind.value} of meter {meter_id} takes no amount (got {amount})")
        now = self._clock()
        cid = f"{self._origin}.{uuid.uuid4().hex}" if self._origin else uuid.uuid4().hex
        command = Command(correlation_id=cid, meter_id=meter_id, kind=kind, created_at=now, amount=None,
                          reference=reference, updated_at=now, idempotency_key=key,
                          detail=f"token {token}" if token else None)
        held = await self._ports.claim(command)
        if held:
            for stored in held:
                differences = stored.differences(command)
                if differences:
                    which = "reference" if reference is not None and stored.reference == reference else "Idempotency-Key"
                    raise KeyConflict(which, (reference if which == "reference" else key) or "",
                                      stored.correlation_id, differences)
            return Submission(self._commands.get(held[0].correlation_id, held[0]), replayed=True)
        self._track(command)
        self._queue.put_nowait(command)
        return Submission(command)

    # -- carrying one out ----------------------------------------------------------------------------
    async def _carry_out(self, command: Command) -> None:
        poller = self._by_meter[command.meter_id]
        sent = self._clock()
        try:
            if command.kind is CommandKind.TOKEN:
                # The token travels in the command's detail ("token <digits>"): the commands table
                # keeps it with its result, and no column is added for it.
                token = (command.detail or "").removeprefix("token ")
                ok, said, balance = await poller.in_session(
                    command.meter_id, lambda s, _r: self._then_credit(s, command.meter_id, enter_token(s, token)))
            else:
                method = _METHOD[command.kind]
                ok, said, balance = await poller.in_session(
                    command.meter_id, lambda s, _r: self._then_credit(s, command.meter_id,
                                                                      disconnect_control(s, method)))
        except (DriverError, axdr.DataError) as exc:  # AccessError, refusals, timeouts, bad frames
            ok, said, balance = False, f"not carried out: {exc}", None
        status = CommandStatus.ACKNOWLEDGED if ok else CommandStatus.FAILED
        done = replace(command, status=status, updated_at=self._clock(), detail=said)
        self._track(done)
        await self._ports.save(done)
        self._ports.replied(command.meter_id, sent, self._clock())
        if balance is not None:
            await self._emit(balance)
        outcome = "acknowledged by the meter" if ok else "failed"
        await self._emit(Event(ts=done.updated_at or sent, meter_id=done.meter_id, kind=EventKind.COMMAND,
                               severity=Severity.INFO if ok else Severity.WARNING,
                               detail=f"command {done.kind.value}, correlation id {done.correlation_id}: "
                                      f"{outcome}: {said}"))

    async def _then_credit(self, session: Session, meter_id: str, act: Awaitable[tuple[bool, str]]
                           ) -> tuple[bool, str, BalanceUpdate | None]:
        """The command, then the credit in the same association (a failed read of it is not the command's)."""
        ok, said = await act
        try:
            balance = await read_balance(session, meter_id, self._clock())
        except (DriverError, axdr.DataError):
            balance = None
        return ok, said, balance

    def _track(self, command: Command) -> None:
        before = self._commands.get(command.correlation_id)
        if before is not None:
            self.by_status[before.status.value] -= 1
        self._commands[command.correlation_id] = command
        self._commands.move_to_end(command.correlation_id)
        self.by_status[command.status.value] += 1
        while len(self._commands) > MAX_TRACKED:
            self._commands.popitem(last=False)


__all__ = ["CONTROL_STATES", "DISCONNECT_CONTROL", "TOKEN_GATEWAY", "TOKEN_STATUS", "DlmsCommands", "disconnect_control",
           "enter_token", "read_balance"]
