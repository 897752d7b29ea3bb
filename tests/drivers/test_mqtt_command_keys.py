"""Issue 27, item 1, at the command tracker with a real Mosquitto, a real SQLite store and the simulated meter:
what a repeat under a key does when the first attempt failed. Sent again only if nothing of it can have reached
the broker (the broker was gone before the publish); never if it may have (the broker took it but its
acknowledgement did not come in time)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.mqtt import CommandSettings, CommandTracker, MqttSettings, MqttSubscriber
from drivers.samples import RawPayload
from gateway.model import Command, CommandStatus
from simulators.broker import Broker
from simulators.mqtt import PaygFleet, PaygPublisher
from storage.base import Store
from storage.open import open_store

METER = "P-00001"


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


async def until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state set by other threads
            await asyncio.sleep(0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store("sqlite", sqlite_path=tmp_path / "store.db")
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


async def _acked(raw: RawPayload) -> None:
    if raw.ack is not None:
        raw.ack()


@asynccontextmanager
async def gateway_side(broker: Broker, store: Store, *, publish_timeout: float = 10.0,
                       claim: Callable[[Command], Awaitable[None]] | None = None,
                       ) -> AsyncIterator[tuple[CommandTracker, MqttSubscriber]]:
    async def claim_then(command: Command) -> list[Command]:
        held = await store.claim_command(command)
        if claim is not None:
            await claim(command)
        return held

    tracker = CommandTracker(CommandSettings(publish_timeout=publish_timeout), persist=store.save_command,
                             claim=claim_then, retry_unsent=store.retry_unsent_command, load=store.get_command,
                             known_meters={METER}, currencies={METER: "KES"}, origin="gw")
    settings = MqttSettings(host=broker.host, port=broker.port, client_id="gw-keys", reconnect_min=0.05,
                            reconnect_max=0.3)
    sub = MqttSubscriber(settings, ["payg/{meter_id}/balance"], _acked, known_meters={METER}, commands=tracker)
    task = asyncio.create_task(sub.run())
    try:
        await sub.wait_connected(10)
        yield tracker, sub
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@asynccontextmanager
async def simulated_meter(broker: Broker) -> AsyncIterator[PaygFleet]:
    fleet = PaygFleet(broker.host, broker.port, 1, meter_ids=[METER], seed=11)
    await fleet.start(run=False)
    try:
        await fleet.wait_connected()
        yield fleet
    finally:
        await fleet.stop()


def topups(fleet: PaygFleet) -> list[object]:
    return [c["correlation_id"] for c in fleet.commands if c.get("command") == "topup"]


async def barrier(tracker: CommandTracker, fleet: PaygFleet) -> None:
    """Return once the meter has every command published before now (QoS 1, one connection, one topic)."""
    last = await tracker.send(METER, "disconnect")
    await until(lambda: any(c.get("correlation_id") == last.correlation_id for c in fleet.commands))


async def test_a_command_that_never_reached_the_broker_is_sent_by_its_repeat(mqtt_broker: Broker,
                                                                             store: Store) -> None:
    stops = 0

    async def broker_goes_away(_: Command) -> None:
        # The broker stops between the claim and the publish: the publish is refused before it is written.
        nonlocal stops
        if stops == 0:
            stops += 1
            mqtt_broker.stop()
            await until(lambda: not sub.connected)

    async with simulated_meter(mqtt_broker) as fleet, \
            gateway_side(mqtt_broker, store, claim=broker_goes_away) as (tracker, sub):
        first = await tracker.submit(METER, "topup", amount=Decimal("100.50"), reference="rcpt-0001")

        assert (first.replayed, first.command.status, first.command.unsent) == (False, CommandStatus.FAILED, True)
        assert first.command.detail is not None and first.command.detail.startswith("not sent: ")
        assert await store.get_command(first.command.correlation_id) == first.command  # stored before the answer

        mqtt_broker.start()
        await sub.wait_connected(20)
        await fleet.wait_connected(20)
        # Four repeats at once: one sends it (the same command, PENDING again), three get it as stored.
        repeats = await asyncio.gather(*(tracker.submit(METER, "topup", amount=Decimal("100.50"),
                                                        reference="rcpt-0001") for _ in range(4)))

        assert sorted(r.replayed for r in repeats) == [False, True, True, True]
        assert {r.command.correlation_id for r in repeats} == {first.command.correlation_id}
        await until(lambda: (tracker.get(first.command.correlation_id) or first.command).status
                    is CommandStatus.ACKNOWLEDGED)
        await barrier(tracker, fleet)
    assert topups(fleet) == [first.command.correlation_id]
    assert fleet.meters[METER].last_topup_amount == Decimal("100.50")


async def test_a_command_that_may_have_reached_the_broker_is_never_sent_again(mqtt_broker: Broker,
                                                                              store: Store) -> None:
    # The broker takes it, but its acknowledgement cannot come within the publish timeout.
    async with simulated_meter(mqtt_broker) as fleet, \
            gateway_side(mqtt_broker, store, publish_timeout=1e-6) as (tracker, _):
        first = await tracker.submit(METER, "topup", amount=Decimal("20"), key="req-1")
        assert (first.command.status, first.command.unsent) == (CommandStatus.FAILED, False)
        assert first.command.detail is not None and first.command.detail.startswith("not confirmed by the broker")

        repeat = await tracker.submit(METER, "topup", amount=Decimal("20.00"), key="req-1")

        assert repeat.replayed and repeat.command.correlation_id == first.command.correlation_id
        assert repeat.command.status in (CommandStatus.FAILED, CommandStatus.ACKNOWLEDGED)
        # The meter did get it once, and its reply settles it: the meter's word wins.
        await until(lambda: (tracker.get(first.command.correlation_id) or first.command).status
                    is CommandStatus.ACKNOWLEDGED)
        again = await tracker.submit(METER, "topup", amount=Decimal("20"), key="req-1")
        assert again.replayed and again.command.status is CommandStatus.ACKNOWLEDGED
        await barrier(tracker, fleet)  # its publish is 'not confirmed' too, but it reaches the meter
    assert topups(fleet) == [first.command.correlation_id]


async def test_every_reply_of_a_known_meter_is_told_to_the_balance_checker(mqtt_broker: Broker) -> None:
    # Issue 27, item 12: the PAYG checker hears of each reply (its own command's with the time it was sent,
    # another gateway's without), so the balance the meter sends with it is not read as consumption.
    told: list[tuple[str, bool]] = []
    tracker = CommandTracker(CommandSettings(), persist=_ignore, known_meters={METER}, currencies={METER: "KES"},
                             origin="gw", replied=lambda meter_id, sent, _: told.append((meter_id, sent is not None)))
    settings = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, client_id="gw-told")
    sub = MqttSubscriber(settings, ["payg/{meter_id}/balance"], _acked, known_meters={METER}, commands=tracker)
    task = asyncio.create_task(sub.run())
    try:
        await sub.wait_connected(10)
        async with simulated_meter(mqtt_broker):
            await tracker.send(METER, "reconnect")
            await until(lambda: told == [(METER, True)])
            async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as other_meter_side:
                await other_meter_side.publish(f"payg/{METER}/command/reply",
                                               b'{"correlation_id": "gw-b.1", "status": "acknowledged"}')
            await until(lambda: told == [(METER, True), (METER, False)])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _ignore(_: Command) -> None:
    return None
