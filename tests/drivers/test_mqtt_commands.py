"""PAYG commands over a real Mosquitto: publish with a correlation id, follow the simulated meter's
reply to ACKNOWLEDGED / FAILED / TIMED_OUT, persist every status through a callback, record events."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from drivers.mqtt import CommandSettings, CommandTracker, MqttSettings, MqttSubscriber
from drivers.mqtt.commands import parse_reply
from drivers.samples import RawPayload
from gateway.errors import ConnectionFailed, InvalidRequest, NotFound, PayloadError, SinkUnavailable
from gateway.model import Command, CommandKind, CommandStatus, DeadLetter, Event, EventKind, Severity
from simulators.broker import Broker
from simulators.mqtt import PaygFleet, PaygPublisher

METERS = {"P-00001", "P-00002", "P-00003"}


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state set by other threads
            await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """Stands in for the store (persist) and the pipeline (emit)."""

    saved: list[Command] = field(default_factory=list)
    emitted: list[Event | DeadLetter] = field(default_factory=list)
    balances: list[RawPayload] = field(default_factory=list)
    failing_saves: int = 0

    async def persist(self, command: Command) -> None:
        if self.failing_saves:
            self.failing_saves -= 1
            raise SinkUnavailable("store down (test)")
        self.saved.append(command)

    async def emit(self, item: Event | DeadLetter) -> None:
        self.emitted.append(item)

    async def balance(self, raw: RawPayload) -> None:
        self.balances.append(raw)
        if raw.ack is not None:
            raw.ack()

    def statuses(self, cid: str) -> list[str]:
        return [c.status.value for c in self.saved if c.correlation_id == cid]

    def events(self) -> list[Event]:
        return [e for e in self.emitted if isinstance(e, Event)]


@asynccontextmanager
async def gateway_side(broker: Broker, rec: Recorder, *, timeout: float = 10.0, origin: str = "gw",
                       client_id: str = "gw-cmd", protocol: str = "5",
                       share_group: str | None = None) -> AsyncIterator[tuple[CommandTracker, MqttSubscriber]]:
    tracker = CommandTracker(CommandSettings(timeout=timeout), persist=rec.persist, emit=rec.emit,
                             known_meters=METERS, currencies=dict.fromkeys(METERS, "KES"), origin=origin)
    settings = MqttSettings(host=broker.host, port=broker.port, client_id=client_id, protocol=protocol,  # type: ignore[arg-type]
                            reconnect_min=0.05, reconnect_max=0.3)
    sub = MqttSubscriber(settings, ["payg/{meter_id}/balance"], rec.balance, known_meters=METERS,
                         commands=tracker, share_group=share_group)
    task = asyncio.create_task(sub.run())
    try:
        await sub.wait_connected(5)
        yield tracker, sub
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@asynccontextmanager
async def meters(broker: Broker, **faults: str) -> AsyncIterator[PaygFleet]:
    fleet = PaygFleet(broker.host, broker.port, 3, seed=11)
    for meter_id, fault in faults.items():
        fleet.set_fault(meter_id.replace("_", "-"), fault)
    await fleet.start(run=False)
    try:
        await fleet.wait_connected()
        yield fleet
    finally:
        await fleet.stop()


# -- pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "correlation", "expected"),
    [
        (b'{"correlation_id": "c1", "status": "acknowledged"}', None, ("c1", CommandStatus.ACKNOWLEDGED, None)),
        (b'{"correlation_id": "c1", "status": "OK", "detail": "done"}', None, ("c1", CommandStatus.ACKNOWLEDGED, "done")),
        (b'{"status": "rejected", "detail": "no"}', b"c2", ("c2", CommandStatus.FAILED, "no")),
    ],
)
def test_parse_reply(payload: bytes, correlation: bytes | None, expected: tuple[str, CommandStatus, str | None]) -> None:
    assert parse_reply("payg/P-1/command/reply", payload, correlation) == expected


@pytest.mark.parametrize(
    ("payload", "reason", "message"),
    [
        (b"{oops", "malformed_json", "payload is not valid JSON"),
        (b"[1]", "not_an_object", "payload must be a JSON object"),
        (b'{"status": "ok"}', "missing_field", "field 'correlation_id' is missing (and no MQTT 5 correlation data)"),
        (b'{"correlation_id": 5, "status": "ok"}', "wrong_type", "field 'correlation_id' must be a non-empty string, got 5"),
        (b'{"correlation_id": "c"}', "missing_field", "field 'status' is missing"),
    ],
)
def test_parse_reply_errors(payload: bytes, reason: str, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_reply("payg/P-1/command/reply", payload, None)
    assert info.value.reason == reason
    assert str(info.value) == f"topic payg/P-1/command/reply: command reply: {message}"


def test_command_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"only the \{meter_id\} placeholder"):
        CommandSettings(command_topic="site/{site}/{meter_id}/cmd")
    with pytest.raises(ValueError, match="must differ"):
        CommandSettings(command_topic="a/{meter_id}", reply_topic="a/{meter_id}")
    with pytest.raises(ValueError, match="must not contain"):
        CommandTracker(CommandSettings(), persist=Recorder().persist, origin="gw.1")


# -- against the broker and the simulated meters ---------------------------------------------------


async def test_topup_is_acknowledged_persisted_and_recorded(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (tracker, _), meters(mqtt_broker) as fleet:
        before = fleet.meters["P-00001"].balance
        command = await tracker.send("P-00001", "topup", amount=Decimal("150.00"), reference="PAY-42")
        assert command.status is CommandStatus.PENDING and command.correlation_id.startswith("gw.")
        assert command.amount == Decimal("150.00") and command.reference == "PAY-42"
        await until(lambda: rec.statuses(command.correlation_id) == ["pending", "acknowledged"])
        got = tracker.get(command.correlation_id)
        assert got is not None and got.status is CommandStatus.ACKNOWLEDGED and got.updated_at is not None
        # The meter carried it out and published its new balance at once.
        await until(lambda: any(r.meter_id == "P-00001" for r in rec.balances))
    assert fleet.meters["P-00001"].last_topup_amount == Decimal("150.00")
    assert fleet.meters["P-00001"].balance > before
    sent = fleet.commands[0]
    assert sent == {"meter_id": "P-00001", "correlation_id": command.correlation_id, "command": "topup",
                    "status": "acknowledged"}
    (event,) = rec.events()
    assert (event.kind, event.severity, event.meter_id) == (EventKind.COMMAND, Severity.INFO, "P-00001")
    assert event.detail == (f"command topup of 150.00 KES (reference PAY-42), correlation id "
                            f"{command.correlation_id}: acknowledged by the meter")
    assert tracker.health()["by_status"]["acknowledged"] == 1


async def test_disconnect_and_reconnect(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (_, sub), meters(mqtt_broker) as fleet:
        off = await sub.send_command("P-00002", CommandKind.DISCONNECT)
        await until(lambda: "acknowledged" in rec.statuses(off.correlation_id))
        assert fleet.meters["P-00002"].relay == "disconnected"
        on = await sub.send_command("P-00002", "reconnect")
        await until(lambda: "acknowledged" in rec.statuses(on.correlation_id))
        assert fleet.meters["P-00002"].relay == "connected"
    # The command's outcome, not the relay state: that comes from the meter's balance updates.
    assert [(e.kind, e.severity) for e in rec.events()] == [(EventKind.COMMAND, Severity.INFO)] * 2
    assert [e.detail for e in rec.events()] == [
        f"command disconnect, correlation id {off.correlation_id}: acknowledged by the meter",
        f"command reconnect, correlation id {on.correlation_id}: acknowledged by the meter",
    ]


async def test_meter_refuses(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (tracker, _), meters(mqtt_broker, P_00003="reject_commands"):
        command = await tracker.send("P-00003", "topup", amount=Decimal(10))
        await until(lambda: rec.statuses(command.correlation_id) == ["pending", "failed"])
    failed = rec.saved[-1]
    assert failed.detail == "rejected by the meter"
    (event,) = rec.events()
    assert (event.kind, event.severity) == (EventKind.COMMAND, Severity.WARNING)
    assert event.detail == (f"command topup of 10 KES, correlation id {command.correlation_id}: "
                            "failed: rejected by the meter")


async def test_no_reply_times_out_and_a_late_reply_still_settles(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec, timeout=0.3) as (tracker, _), \
            meters(mqtt_broker, P_00001="no_reply"):
        command = await tracker.send("P-00001", "disconnect")
        await until(lambda: rec.statuses(command.correlation_id) == ["pending", "timed_out"])
        assert rec.events()[0].detail.endswith("timed out: no reply within 0.3 s")
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as late_meter:
            await late_meter.publish("payg/P-00001/command/reply", json.dumps(
                {"correlation_id": command.correlation_id, "status": "acknowledged"}).encode())
        await until(lambda: rec.statuses(command.correlation_id)[-1:] == ["acknowledged"])
    assert rec.saved[-1].detail == "the reply came after the timeout"
    # Each step of the lifecycle that settles it is recorded: timed out, then acknowledged.
    assert [(e.kind, e.severity) for e in rec.events()] == [(EventKind.COMMAND, Severity.WARNING),
                                                          (EventKind.COMMAND, Severity.INFO)]
    assert all(command.correlation_id in e.detail for e in rec.events())


async def test_reply_by_mqtt5_correlation_data_and_repeated_replies(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (tracker, _), meters(mqtt_broker, P_00001="no_reply"):
        command = await tracker.send("P-00001", "reconnect")
        cid = command.correlation_id.encode()
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as meter:
            for _ in range(2):  # the second is a re-delivery: nothing new
                await meter.publish("payg/P-00001/command/reply", b'{"status": "done"}', correlation_data=cid)
        await until(lambda: tracker.replies == 2 and tracker._work.empty())
        await until(lambda: rec.statuses(command.correlation_id) == ["pending", "acknowledged"])
    assert len(rec.events()) == 1


async def test_bad_and_foreign_replies(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (tracker, sub):
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as meter:
            await meter.publish("payg/P-00001/command/reply", b"{garbage")
            await meter.publish("payg/P-00001/command/reply", b'{"correlation_id": "other.1", "status": "ok"}')
        await until(lambda: tracker.replies == 2 and tracker._work.empty() and rec.emitted)
        health = sub.health()["commands"]
    (dead,) = rec.emitted
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.where, dead.meter_id, dead.payload) == (
        "malformed_json", "payg/P-00001/command/reply", "P-00001", "{garbage")
    assert health["bad_replies"] == 1 and health["unmatched_replies"] == 1
    assert sub.health()["acks_sent"] == 2  # both replies acked: the subscriber goes on


async def test_not_connected_bad_requests_and_a_store_that_is_down(mqtt_broker: Broker) -> None:
    rec = Recorder()
    idle = CommandTracker(CommandSettings(), persist=rec.persist, known_meters=METERS)
    with pytest.raises(ConnectionFailed, match="not connected to the broker"):
        await idle.send("P-00001", "disconnect")
    async with gateway_side(mqtt_broker, rec) as (tracker, _), meters(mqtt_broker) as fleet:
        with pytest.raises(NotFound, match="'P-99999' not found"):
            await tracker.send("P-99999", "disconnect")
        with pytest.raises(InvalidRequest, match="amount must be a positive number"):
            await tracker.send("P-00001", "topup")
        with pytest.raises(InvalidRequest, match="takes no amount"):
            await tracker.send("P-00001", "disconnect", amount=Decimal(1))
        with pytest.raises(InvalidRequest, match="unknown command 'explode'"):
            await tracker.send("P-00001", "explode")
        rec.failing_saves = 1
        with pytest.raises(SinkUnavailable):
            await tracker.send("P-00001", "disconnect")
        await asyncio.sleep(0.3)  # had it been published, the meter would have answered by now
        assert fleet.commands == [] and rec.saved == []


async def test_status_is_retried_until_persisted(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec) as (tracker, sub), meters(mqtt_broker):
        command = await tracker.send("P-00001", "disconnect")
        rec.failing_saves = 3  # the store goes away before the reply comes
        await until(lambda: rec.statuses(command.correlation_id) == ["pending", "acknowledged"])
        assert tracker.persist_failures == 3
        await until(lambda: sub.health()["acks_sent"] >= 1)


async def test_restored_after_a_restart(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec, client_id="gw-a") as (tracker, _), \
            meters(mqtt_broker, P_00002="no_reply"):
        command = await tracker.send("P-00002", "disconnect")
    # A new gateway process (same origin) picks the pending command up from the store...
    rec2 = Recorder()
    async with gateway_side(mqtt_broker, rec2, client_id="gw-a") as (tracker2, _):
        other = Command(correlation_id="gw-b.1", meter_id="P-00001", kind=CommandKind.TOPUP,
                        created_at=datetime.now(UTC), amount=Decimal(1))
        assert tracker2.restore([rec.saved[0], other]) == 1  # ...but not another gateway's
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as meter:
            await meter.publish("payg/P-00002/command/reply", json.dumps(
                {"correlation_id": command.correlation_id, "status": "failed", "detail": "relay stuck"}).encode())
        await until(lambda: rec2.statuses(command.correlation_id) == ["failed"])
    assert rec2.saved[0].detail == "relay stuck"


async def test_shared_group_each_gateway_settles_only_its_own(mqtt_broker: Broker) -> None:
    ra, rb = Recorder(), Recorder()
    async with gateway_side(mqtt_broker, ra, origin="gw-a", client_id="gw-a", share_group="g") as (a, _), \
            gateway_side(mqtt_broker, rb, origin="gw-b", client_id="gw-b", share_group="g") as (b, _), \
            meters(mqtt_broker):
        ca = await a.send("P-00001", "disconnect")
        cb = await b.send("P-00002", "disconnect")
        await until(lambda: "acknowledged" in ra.statuses(ca.correlation_id)
                    and "acknowledged" in rb.statuses(cb.correlation_id))
        await until(lambda: a.replies == 2 and b.replies == 2)  # replies are not shared: both see both
    assert ra.statuses(cb.correlation_id) == [] and rb.statuses(ca.correlation_id) == []
    assert a.unmatched_replies == 1 and b.unmatched_replies == 1
    assert len(ra.events()) == 1 and len(rb.events()) == 1


async def test_mqtt_311_commands(mqtt_broker: Broker) -> None:
    rec = Recorder()
    async with gateway_side(mqtt_broker, rec, protocol="3.1.1") as (tracker, _), meters(mqtt_broker):
        command = await tracker.send("P-00003", "topup", amount=Decimal("5.5"))
        await until(lambda: "acknowledged" in rec.statuses(command.correlation_id))


