"""Commands to PAYG meters over MQTT (top-up, disconnect, reconnect) and their tracking.

The gateway publishes a command on the meter's command topic (QoS 1) with a correlation id, in
the payload and, with MQTT 5, as Correlation Data with the reply topic as Response Topic::

    payg/M-1/command  {"correlation_id": "9f0c...", "command": "topup", "amount": 50.00,
                       "currency": "KES", "reference": "PAY-7781", "ts": "2026-11-01T10:00:00Z",
                       "reply_to": "payg/M-1/command/reply"}

and the meter answers on its reply topic::

    payg/M-1/command/reply  {"correlation_id": "9f0c...", "status": "acknowledged" | "failed",
                             "detail": "..."}

A command is PENDING once the broker has it, then ACKNOWLEDGED or FAILED by the reply, or
TIMED_OUT when no reply came within the timeout (a late reply still settles it). Each status is
persisted through the `persist` callback (the gateway passes `store.save_command`), in order,
retried while it fails; a reply is acknowledged to the broker only once its status is
persisted. Each settled command raises an Event of kind `command` (a late reply after a timeout
raises a second one). A reply that cannot be read is a dead letter (and acknowledged), whatever
it holds: a correlation id with a character no store can hold (NUL, a lone surrogate) is refused
as `bad_text` (looking it up would fail, and be retried, forever), the free-text detail is kept
with such characters escaped.

A command is sent once per key (`submit`): its reference, and the client's Idempotency-Key. The
claim (the command stored PENDING under its keys, or the commands that already hold them, in one
store transaction: `Store.claim_command`) comes before the publish, so repeats, concurrent or
after a restart, and on any gateway sharing the store, get the stored command and publish
nothing. A repeat with another body is a KeyConflict. A command that failed before anything
reached the broker (`unsent`) is sent by a repeat; one that may have reached it, never.

Replies are subscribed without a shared-subscription group: in a group, the reply to this
gateway's command could go to another gateway, which does not know it and ignores it.

The wire format (topics, the command's JSON, reading a reply) is drivers.mqtt.command_wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from drivers.mqtt.command_wire import CommandSettings, Publisher, command_payload, money, parse_reply
from drivers.mqtt.topics import TopicTemplate
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, InvalidField, InvalidRequest, KeyConflict, NotFound, NotSent, PayloadError
from gateway.model import Command, CommandKind, CommandStatus, DeadLetter, Event, EventKind, Severity, Submission
from gateway.model.commands import MAX_KEY
from gateway.model.currencies import allowed_decimals, decimals_of
from gateway.model.samples import Ack

__all__ = ["CommandSettings", "CommandTracker", "Publisher", "parse_reply"]

log = logging.getLogger(__name__)

Persist = Callable[[Command], Awaitable[None]]
#: Store a new command PENDING under its keys, or return the commands that already hold them.
Claim = Callable[[Command], Awaitable[list[Command]]]
#: PENDING again (at the given time) if still FAILED and unsent; None if another request was first.
RetryUnsent = Callable[[str, datetime], Awaitable[Command | None]]
Load = Callable[[str], Awaitable[Command | None]]
Emit = Callable[[Event | DeadLetter], Awaitable[None]]
#: A meter answered a command: (meter id, when the command was sent if known, when the reply was read).
Replied = Callable[[str, datetime | None, datetime], None]

_PREVIEW = 2048


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Reply:
    meter_id: str | None
    topic: str
    correlation_id: str
    status: CommandStatus
    detail: str | None
    ack: Ack | None


@dataclass(slots=True)
class _Save:
    command: Command
    event: Event | None = None


@dataclass(slots=True)
class _Dead:
    dead: DeadLetter
    ack: Ack | None


class CommandTracker:
    """Sends commands and follows them to a final status; `run()` does the timing and persisting.

    `attach(connection)` gives it the connection to publish on (the subscriber does that).
    """

    def __init__(
        self,
        settings: CommandSettings,
        *,
        persist: Persist,
        claim: Claim | None = None,
        retry_unsent: RetryUnsent | None = None,
        load: Load | None = None,
        emit: Emit | None = None,
        replied: Replied | None = None,
        known_meters: set[str] | None = None,
        currencies: Mapping[str, str] | None = None,
        currency_decimals: Mapping[str, int] | None = None,
        origin: str = "",
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if any(c in origin for c in ". /+#"):
            msg = f"command origin {origin!r} must not contain '.', ' ', '/', '+' or '#'"
            raise ValueError(msg)
        self.settings = settings
        #: Prefix of the correlation ids this tracker makes (e.g. the gateway id): several gateways
        #: share a store and see each other's replies, and each settles only its own commands.
        self.origin = origin
        self.command_template = TopicTemplate(settings.command_topic)
        self.reply_template = TopicTemplate(settings.reply_topic)
        self.known_meters = known_meters
        self.currencies = dict(currencies or {})
        #: Decimals allowed per currency where they differ from ISO 4217's minor units.
        self.currency_decimals = dict(currency_decimals or {})
        self.clock = clock
        self.monotonic = monotonic
        self._persist = persist
        #: Without a claim (a tracker with no store) every send is a new command.
        self._claim = claim
        self._retry_unsent = retry_unsent
        self._load = load
        self._emit = emit
        #: Told at once when a meter's reply settles a command (the PAYG checker: the balance update
        #: the meter sends with its reply is not consumption).
        self._replied = replied
        self._publisher: Publisher | None = None
        self._commands: OrderedDict[str, Command] = OrderedDict()
        self._deadlines: dict[str, float] = {}
        self._work: asyncio.Queue[_Reply | _Save | _Dead] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.sent = 0
        self.replies = 0
        self.unmatched_replies = 0
        self.bad_replies = 0
        self.persist_failures = 0
        self.by_status: dict[str, int] = {s.value: 0 for s in CommandStatus}

    # -- public surface ------------------------------------------------------------------------------

    def attach(self, publisher: Publisher | None) -> None:
        self._publisher = publisher

    def serves(self, meter_id: str) -> bool:
        """Whether commands to this meter go through this tracker (a meter it knows)."""
        return self.known_meters is None or meter_id in self.known_meters

    def get(self, correlation_id: str) -> Command | None:
        """The tracked command (as last known in memory), or None."""
        return self._commands.get(correlation_id)

    def owns(self, correlation_id: str) -> bool:
        """Did this tracker (this origin) make the id? Without an origin it claims every id."""
        return not self.origin or correlation_id.startswith(f"{self.origin}.")

    def pending(self) -> list[Command]:
        return [self._commands[c] for c in self._deadlines if c in self._commands]

    async def send(self, meter_id: str, kind: CommandKind | str, *, amount: Decimal | None = None,
                   reference: str | None = None, key: str | None = None) -> Command:
        """`submit`, for callers that need only the command."""
        return (await self.submit(meter_id, kind, amount=amount, reference=reference, key=key)).command

    async def submit(self, meter_id: str, kind: CommandKind | str, *, amount: Decimal | None = None,
                     reference: str | None = None, key: str | None = None,
                     token: str | None = None) -> Submission:
        """Send a command once per key and return it: PENDING once the broker has it, or, for a
        repeat under a key the store already holds (`replayed`), the stored command as it is now.

        The keys are the reference and `key` (a client's Idempotency-Key); without either every
        call is a new command. Raises InvalidRequest / InvalidField (bad kind, amount or key),
        NotFound (unknown meter), ConnectionFailed (not connected: nothing stored or sent),
        KeyConflict (a key of another command, with another body: nothing stored or sent) and
        whatever the store raises (nothing sent). If the connection ends before the broker
        acknowledged it, the command is returned FAILED (a reply that arrives anyway still
        settles it), `unsent` if nothing can have reached the broker.
        """
        kind, amount = self._check(meter_id, kind, amount, reference, key)
        if kind is CommandKind.TOKEN or token is not None:
            raise InvalidRequest(f"meter {meter_id}: tokens are entered at a DLMS meter's Token gateway; "
                                 "an MQTT meter is topped up with kind topup")
        publisher = self._publisher
        if publisher is None or not publisher.connected:
            where = "MQTT broker"
            raise ConnectionFailed(meter_id, where, f"cannot send {kind.value}: not connected to the broker")
        now = self.clock()
        cid = f"{self.origin}.{uuid.uuid4().hex}" if self.origin else uuid.uuid4().hex
        command = Command(correlation_id=cid, meter_id=meter_id, kind=kind, created_at=now,
                          amount=amount, reference=reference, updated_at=now, idempotency_key=key)
        if self._claim is None:
            await self._persist(command)
        else:
            held = await self._claim(command)
            if held:
                stored = self._repeat(command, held)
                if stored.status is not CommandStatus.FAILED or not stored.unsent or self._retry_unsent is None:
                    return Submission(stored, replayed=True)
                # Nothing of it reached the broker: this repeat sends it (one repeat only, if several).
                again = await self._retry_unsent(stored.correlation_id, now)
                if again is None:
                    fresh = await self._load(stored.correlation_id) if self._load is not None else None
                    return Submission(fresh or stored, replayed=True)
                command = again
        return Submission(await self._publish(publisher, command))

    def _repeat(self, request: Command, held: list[Command]) -> Command:
        """The command a repeat gets (the tracker's own view if it follows it), or KeyConflict."""
        for stored in held:
            differences = stored.differences(request)
            if differences:
                if request.reference is not None and stored.reference == request.reference:
                    raise KeyConflict("reference", request.reference, stored.correlation_id, differences)
                raise KeyConflict("Idempotency-Key", request.idempotency_key or "", stored.correlation_id, differences)
        stored = held[0]
        log.info("command %s to meter %s repeated under its key: not sent again (%s)", stored.correlation_id,
                 stored.meter_id, stored.status.value)
        return self._commands.get(stored.correlation_id, stored)

    async def _publish(self, publisher: Publisher, command: Command) -> Command:
        """Publish a stored PENDING command and follow it."""
        kind, meter_id = command.kind, command.meter_id
        self._track(command)
        self._deadlines[command.correlation_id] = self.monotonic() + self.settings.timeout
        self._wake.set()
        topic = self.command_template.render(meter_id=meter_id)
        reply_to = self.reply_template.render(meter_id=meter_id)
        try:
            await publisher.publish(topic, command_payload(self.currencies, command, reply_to), qos=1, response_topic=reply_to,
                                    correlation_data=command.correlation_id.encode(),
                                    timeout=self.settings.publish_timeout)
        except (ConnectionFailed, TimeoutError) as exc:
            unsent = isinstance(exc, NotSent)
            log.warning("command %s %s to meter %s %s: %s", kind.value, command.correlation_id, meter_id,
                        "not sent" if unsent else "not confirmed by the broker", exc)
            if not unsent:
                detail = f"not confirmed by the broker: {exc}"
            elif command.reference is None and command.idempotency_key is None:
                detail = f"not sent: {exc}"
            else:  # nothing reached the broker, so a repeat may send it
                detail = f"not sent: {exc}; post it again with the same reference or Idempotency-Key to send it"
            settled = self._settle(command.correlation_id, CommandStatus.FAILED, detail, by_reply=False,
                                   unsent=unsent)
            if settled is None:  # a reply raced in and settled it already
                return self._commands.get(command.correlation_id, command)
            if unsent:
                # Stored now, not only by the worker: a repeat right after this answer must find it
                # unsent, or it would not send it. If the store fails here, the worker retries.
                with contextlib.suppress(Exception):
                    await self._persist(settled)
            self._work.put_nowait(_Save(settled, self._event(settled)))
            return settled
        self.sent += 1
        log.info("command %s %s sent to meter %s", kind.value, command.correlation_id, meter_id)
        return self._commands.get(command.correlation_id, command)

    def handle_reply(self, meter_id: str | None, topic: str, payload: bytes, correlation_data: bytes | None,
                     ack: Ack | None) -> None:
        """A message on a reply topic (called by the subscriber, in the loop thread). Never raises."""
        self.replies += 1
        try:
            cid, status, detail = parse_reply(topic, payload, correlation_data)
        except Exception as exc:
            self.bad_replies += 1
            if isinstance(exc, PayloadError):
                reason, text = exc.reason, str(exc)
                log.warning("%s", exc)
            else:  # not foreseen: the reply is set aside all the same, acknowledged with its dead letter
                reason, text = "internal_error", f"command reply: {type(exc).__name__}: {exc}"[:500]
                log.exception("command reply on %s could not be read", topic)
            preview = payload[:_PREVIEW].decode("utf-8", errors="replace")
            dead = DeadLetter(ts=self.clock(), source="mqtt", where=topic, reason=reason, detail=text,
                              payload=preview, meter_id=meter_id)
            self._work.put_nowait(_Dead(dead, ack))
            return
        self._work.put_nowait(_Reply(meter_id, topic, cid, status, detail, ack))

    def restore(self, commands: Iterable[Command]) -> int:
        """Track this origin's commands still PENDING from before a restart, with what is left of
        their timeout; returns how many."""
        now, mono, n = self.clock(), self.monotonic(), 0
        for command in commands:
            if (command.status is not CommandStatus.PENDING or command.correlation_id in self._commands
                    or not self.owns(command.correlation_id)):
                continue
            left = self.settings.timeout - (now - command.created_at).total_seconds()
            self._track(command)
            self._deadlines[command.correlation_id] = mono + max(0.0, left)
            n += 1
        if n:
            self._wake.set()
        return n

    async def run(self) -> None:
        """Time out pending commands and persist every change, in order, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._timeouts(), name="mqtt-command-timeouts")
            tg.create_task(self._worker(), name="mqtt-command-persist")

    def health(self) -> dict[str, Any]:
        return {"sent": self.sent, "pending": len(self._deadlines), "replies": self.replies,
                "unmatched_replies": self.unmatched_replies, "bad_replies": self.bad_replies,
                "persist_failures": self.persist_failures, "by_status": dict(self.by_status)}

    # -- internals -----------------------------------------------------------------------------------

    def _check(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None,
               reference: str | None, key: str | None = None) -> tuple[CommandKind, Decimal | None]:
        try:
            kind = CommandKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in CommandKind)
            raise InvalidRequest(f"unknown command {kind!r} for meter {meter_id} (known: {known})") from None
        if self.known_meters is not None and meter_id not in self.known_meters:
            raise NotFound("PAYG meter", meter_id)
        if kind is CommandKind.TOPUP:
            try:
                amount = None if amount is None else Decimal(amount)
            except (InvalidOperation, TypeError, ValueError):
                raise InvalidRequest(f"top-up of meter {meter_id}: amount {amount!r} is not a number") from None
            if amount is None or not amount.is_finite() or amount <= 0:
                raise InvalidRequest(f"top-up of meter {meter_id}: amount must be a positive number, got {amount}")
            self._check_decimals(meter_id, amount)
        elif amount is not None:
            raise InvalidRequest(f"{kind.value} of meter {meter_id} takes no amount (got {amount})")
        if reference is not None and (not reference or len(reference) > MAX_KEY):
            raise InvalidRequest(f"{kind.value} of meter {meter_id}: reference must be 1..{MAX_KEY} characters")
        if key is not None and (not key or len(key) > MAX_KEY):
            raise InvalidField("Idempotency-Key", f"{kind.value} of meter {meter_id}: the key must be "
                                                  f"1..{MAX_KEY} characters")
        return kind, amount

    def _check_decimals(self, meter_id: str, amount: Decimal) -> None:
        """No more decimals than the currency's minor unit (ISO 4217, or [mqtt] currency_decimals)."""
        currency = self.currencies.get(meter_id, "XXX")
        allowed = allowed_decimals(currency, self.currency_decimals)
        places = decimals_of(amount)
        if allowed is not None and places > allowed:
            why = ("[mqtt] currency_decimals" if currency in self.currency_decimals
                   else "its ISO 4217 minor unit; [mqtt] currency_decimals can allow more")
            msg = (f"top-up of meter {meter_id}: {amount} {currency} has {places} decimal places; {currency} "
                   f"allows at most {allowed} ({why})")
            raise InvalidField("amount", msg)

    def _track(self, command: Command) -> None:
        before = self._commands.get(command.correlation_id)
        if before is not None:  # sent again after it failed unsent
            self.by_status[before.status.value] -= 1
        self._commands[command.correlation_id] = command
        self._commands.move_to_end(command.correlation_id)
        self.by_status[command.status.value] += 1
        # Bounded memory: forget the oldest settled commands (the store still has them).
        while len(self._commands) > self.settings.max_tracked:
            oldest = next((c for c in self._commands if c not in self._deadlines), None)
            if oldest is None:
                break
            del self._commands[oldest]

    def _settle(self, cid: str, status: CommandStatus, detail: str | None, *, by_reply: bool,
                unsent: bool = False) -> Command | None:
        """Move a tracked command to `status`; None if that changes nothing.

        The meter's word wins over the gateway's guesses: a reply settles a command that timed out
        or whose publish was not confirmed; a timeout or a publish failure settles only a PENDING
        one; once ACKNOWLEDGED a command stays so (a repeated reply is redelivery, not news).
        """
        command = self._commands.get(cid)
        if command is None or command.status is status or command.status is CommandStatus.ACKNOWLEDGED:
            return None
        if not by_reply and command.status is not CommandStatus.PENDING:
            return None
        if by_reply and command.status is CommandStatus.TIMED_OUT:
            detail = f"{detail} (the reply came after the timeout)" if detail else "the reply came after the timeout"
        self.by_status[command.status.value] -= 1
        self.by_status[status.value] += 1
        settled = replace(command, status=status, updated_at=self.clock(), detail=detail, unsent=unsent)
        self._commands[cid] = settled
        self._deadlines.pop(cid, None)
        return settled

    def _event(self, c: Command) -> Event:
        what = c.kind.value
        if c.amount is not None:
            what += f" of {money(c.amount)} {self.currencies.get(c.meter_id, 'XXX')}"
        if c.reference is not None:
            what += f" (reference {c.reference})"
        outcome = {
            CommandStatus.ACKNOWLEDGED: "acknowledged by the meter",
            CommandStatus.FAILED: "failed",
            CommandStatus.TIMED_OUT: f"timed out: no reply within {self.settings.timeout:g} s",
        }[c.status]
        detail = f"command {what}, correlation id {c.correlation_id}: {outcome}"
        if c.detail and c.status is not CommandStatus.TIMED_OUT:
            detail += f": {c.detail}"
        severity = Severity.INFO if c.status is CommandStatus.ACKNOWLEDGED else Severity.WARNING
        # Kind command, not topup / relay_*: an acknowledged command is not yet the meter's new
        # state (the balance updates that follow raise those), and a failed one never is.
        return Event(ts=c.updated_at or self.clock(), meter_id=c.meter_id, kind=EventKind.COMMAND,
                     severity=severity, detail=detail)

    async def _timeouts(self) -> None:
        while True:
            self._wake.clear()
            now = self.monotonic()
            for cid, deadline in list(self._deadlines.items()):
                if deadline <= now:
                    settled = self._settle(cid, CommandStatus.TIMED_OUT, None, by_reply=False)
                    if settled is not None:
                        self._work.put_nowait(_Save(settled, self._event(settled)))
            wait = min(self._deadlines.values(), default=now + 3600) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(wait, 3600)))

    async def _worker(self) -> None:
        """Jobs in arrival order; a step that fails (the store is down) is retried, never dropped."""
        while True:
            job = await self._work.get()
            if isinstance(job, _Dead):
                await self._retrying(self._emit_one, job.dead)
            elif isinstance(job, _Save):
                await self._retrying(self._save, job)
            else:
                await self._retrying(self._lookup, job.correlation_id)
                command = self._commands.get(job.correlation_id)
                if command is None or (job.meter_id is not None and command.meter_id != job.meter_id):
                    self.unmatched_replies += 1
                    # Normal in a shared-subscription group: another gateway sent this command. Its
                    # meter's next balance may come here all the same.
                    if job.meter_id is not None and self._replied is not None:
                        self._replied(job.meter_id, None, self.clock())
                    log.debug("reply on %s for unknown command %s ignored", job.topic, job.correlation_id)
                else:
                    settled = self._settle(job.correlation_id, job.status, job.detail, by_reply=True)
                    if settled is not None and self._replied is not None:
                        self._replied(settled.meter_id, settled.created_at, settled.updated_at or self.clock())
                    if settled is not None:
                        # Persisted before the ack: a crash in between makes the broker redeliver it.
                        await self._retrying(self._save, _Save(settled, self._event(settled)))
            if not isinstance(job, _Save) and job.ack is not None:
                job.ack()

    async def _retrying(self, step: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        backoff = Backoff(0.2, 10.0)
        failing = False
        while True:
            try:
                await step(arg)
                return
            except Exception as exc:  # the store is down or refuses: retry in order, never drop
                self.persist_failures += 1
                if not failing:
                    log.warning("command tracking: %s failed (%s); retrying with backoff", step.__name__, exc)
                    failing = True
                await asyncio.sleep(backoff.next())

    async def _emit_one(self, item: Event | DeadLetter) -> None:
        if self._emit is not None:
            await self._emit(item)

    async def _save(self, job: _Save) -> None:
        await self._persist(job.command)
        if job.event is not None:
            event, job.event = job.event, None  # emitted once even if a later retry happens
            await self._emit_one(event)

    async def _lookup(self, correlation_id: str) -> None:
        """Find a command this gateway no longer holds in memory (e.g. sent before a restart)."""
        if correlation_id not in self._commands and self._load is not None and self.owns(correlation_id):
            stored = await self._load(correlation_id)
            if stored is not None:
                self._track(stored)
