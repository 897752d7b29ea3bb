"""MqttSubscriber / MqttConnection against a real Mosquitto: persistent sessions, manual acks,
reconnects, shared subscriptions, back-pressure."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from drivers.mqtt import MqttConnection, MqttSettings, MqttSubscriber, TopicTemplate
from drivers.samples import RawPayload
from simulators.broker import Broker
from simulators.mqtt import PaygFleet, publish_balance

TEMPLATE = "payg/{meter_id}/balance"


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


def settings(broker: Broker, client_id: str = "gw-test", **kw: Any) -> MqttSettings:
    return MqttSettings(
        host=broker.host, port=broker.port, client_id=client_id, reconnect_min=0.05, reconnect_max=0.3, **kw
    )


@dataclass
class Sink:
    """Collects emitted payloads; acks them at once unless told not to."""

    auto_ack: bool = True
    got: list[RawPayload] = field(default_factory=list)

    async def __call__(self, raw: RawPayload) -> None:
        self.got.append(raw)
        if self.auto_ack and raw.ack is not None:
            raw.ack()

    def keys(self) -> list[tuple[str | None, str]]:
        return [(r.meter_id, json.loads(r.payload)["ts"]) for r in self.got]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state that other threads set
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(sub: MqttSubscriber, *, connect: bool = True) -> AsyncIterator[MqttSubscriber]:
    task = asyncio.create_task(sub.run())
    try:
        if connect:
            await sub.wait_connected(5)
        yield sub
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def ts_of(fleet_ts: datetime) -> str:
    return fleet_ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- topic templates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "subscription", "topic", "meter_id"),
    [
        ("payg/{meter_id}/balance", "payg/+/balance", "payg/M-1/balance", "M-1"),
        ("site/{site}/m/{meter_id}", "site/+/m/+", "site/north/m/M-9", "M-9"),
        ("payg/meter-{meter_id}/state", "payg/+/state", "payg/meter-42/state", "42"),
        ("payg/{meter_id}/balance", "payg/+/balance", "payg/M-1/credit", None),
        ("payg/{meter_id}/balance", "payg/+/balance", "payg/a/b/balance", None),
        ("payg/meter-{meter_id}/state", "payg/+/state", "payg/42/state", None),
    ],
)
def test_topic_template(template: str, subscription: str, topic: str, meter_id: str | None) -> None:
    t = TopicTemplate(template)
    assert t.subscription == subscription
    assert t.meter_id(topic) == meter_id


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("payg/+/balance", "exactly once"),
        ("payg/{meter_id}/#", "wildcards"),
        ("payg/{meter_id}/{meter_id}", "exactly once"),
        ("payg//{meter_id}", "empty level"),
    ],
)
def test_topic_template_errors(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TopicTemplate(template)


def test_settings_and_share_group_validation(mqtt_broker: Broker) -> None:
    with pytest.raises(ValueError, match="max_inflight_acks"):
        MqttSettings(max_inflight_acks=0)
    with pytest.raises(ValueError, match="client_id"):
        MqttSettings(client_id="")
    with pytest.raises(ValueError, match="need MQTT 5"):
        MqttSubscriber(settings(mqtt_broker, protocol="3.1.1"), [TEMPLATE], Sink(), share_group="g")
    sub = MqttSubscriber(settings(mqtt_broker), [TEMPLATE], Sink(), share_group="gw")
    assert sub.subscriptions == ("$share/gw/payg/+/balance",)


# -- receiving ----------------------------------------------------------------------------------


async def test_receives_from_payg_fleet_with_meter_ids(mqtt_broker: Broker) -> None:
    sink = Sink()
    received_at = datetime(2030, 1, 1, tzinfo=UTC)
    sub = MqttSubscriber(settings(mqtt_broker), [TEMPLATE], sink, clock=lambda: received_at)
    async with running(sub):
        fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 4, seed=7)
        await fleet.start(run=False)
        try:
            for _ in range(3):
                await fleet.publish_round()
        finally:
            await fleet.stop()
        await until(lambda: len(sink.got) == 12)
        health = sub.health()
    assert sorted(sink.keys()) == sorted((m, ts_of(ts)) for m, ts in fleet.updates)
    assert {r.meter_id for r in sink.got} == set(fleet.meters)
    assert all(r.received_at == received_at and r.topic == f"payg/{r.meter_id}/balance" for r in sink.got)
    assert health["connected"] is True
    assert health["messages"] == 12 and health["acks_sent"] == 12
    assert set(health["meters"]) == set(fleet.meters)
    last = health["meters"]["P-00001"]
    assert last["topic"] == "payg/P-00001/balance" and '"balance"' in last["payload"]
    assert len(sub.recent("P-00001")) == 3
    assert sub.health()["connected"] is False  # after run() ended


async def test_unknown_meter_and_foreign_topic_have_no_meter_id(mqtt_broker: Broker) -> None:
    sink = Sink()
    sub = MqttSubscriber(settings(mqtt_broker), [TEMPLATE], sink, known_meters={"M-1"})
    async with running(sub):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", b"1")
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-2", b"2")
        await until(lambda: len(sink.got) == 2)
    assert [(r.meter_id, r.payload) for r in sink.got] == [("M-1", b"1"), (None, b"2")]
    assert sub.health()["unknown_meter_messages"] == 1
    assert sub.health()["last_unknown_topic"] == "payg/M-2/balance"


# -- persistent session and manual ack ----------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_unacked_message_is_redelivered_to_the_same_client_id(mqtt_broker: Broker, protocol: str) -> None:
    s = settings(mqtt_broker, client_id=f"gw-redeliver-{protocol}", protocol=protocol)
    first = Sink(auto_ack=False)
    async with running(MqttSubscriber(s, [TEMPLATE], first)):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", {"ts": 1, "balance": 5})
        await until(lambda: len(first.got) == 1)
    # Disconnected without acking: the broker keeps the message in the persistent session.
    second = Sink()
    async with running(MqttSubscriber(s, [TEMPLATE], second)):
        await until(lambda: len(second.got) == 1)
        assert second.got[0].payload == first.got[0].payload
        await asyncio.sleep(0.2)  # let the PUBACK reach the broker before the clean disconnect
    # Acked this time: a third connection gets nothing more.
    third = Sink()
    async with running(MqttSubscriber(s, [TEMPLATE], third)) as sub:
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", {"ts": 2, "balance": 4})
        await until(lambda: len(third.got) == 1)
        await asyncio.sleep(0.2)
        assert sub.health()["session_present"] is True
    assert [json.loads(r.payload)["ts"] for r in third.got] == [2]


async def test_messages_queued_while_offline_survive_a_broker_restart(mqtt_broker: Broker) -> None:
    s = settings(mqtt_broker, client_id="gw-offline")
    async with running(MqttSubscriber(s, [TEMPLATE], Sink())):
        pass  # creates the persistent session and its subscription
    for i in range(5):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, f"M-{i}", {"ts": i, "balance": i})
    await asyncio.to_thread(mqtt_broker.restart)  # SIGTERM: Mosquitto saves the queue to disk
    sink = Sink()
    async with running(MqttSubscriber(s, [TEMPLATE], sink)):
        await until(lambda: len(sink.got) == 5)
    assert sorted(r.meter_id or "" for r in sink.got) == [f"M-{i}" for i in range(5)]


async def test_broker_sigkill_keeps_what_was_autosaved(mqtt_broker: Broker) -> None:
    s = settings(mqtt_broker, client_id="gw-kill")
    async with running(MqttSubscriber(s, [TEMPLATE], Sink())):
        pass
    for i in range(3):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, f"M-{i}", str(i).encode())
    published_at = time.time()
    db = mqtt_broker.data_dir / "mosquitto.db"
    # autosave_interval 1 s, checked by Mosquitto in whole seconds: a save follows within ~2-3 s.
    await until(lambda: db.exists() and db.stat().st_mtime > published_at, timeout=5)
    await asyncio.to_thread(mqtt_broker.restart, True)  # SIGKILL: only the autosaved state survives
    sink = Sink()
    async with running(MqttSubscriber(s, [TEMPLATE], sink)):
        await until(lambda: len(sink.got) == 3)
    assert sorted(r.payload for r in sink.got) == [b"0", b"1", b"2"]


async def test_ack_from_a_previous_connection_is_dropped_and_redelivered(mqtt_broker: Broker) -> None:
    sink = Sink(auto_ack=False)
    sub = MqttSubscriber(settings(mqtt_broker, client_id="gw-epoch"), [TEMPLATE], sink)
    async with running(sub):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", {"ts": 1, "balance": 5})
        await until(lambda: len(sink.got) == 1)
        await asyncio.to_thread(mqtt_broker.restart)
        await until(lambda: sub.health()["reconnects"] == 1 and sub.connected)
        old = sink.got[0]
        assert old.ack is not None
        old.ack()  # belongs to the dead connection: must not be sent on the new one
        assert sub.health()["acks_dropped"] == 1
        assert sub.health()["acks_sent"] == 0
        await until(lambda: len(sink.got) == 2)  # the broker redelivers it on the new connection
        assert sink.got[1].payload == old.payload
        assert sink.got[1].ack is not None
        sink.got[1].ack()
        assert sub.health()["acks_sent"] == 1


# -- broker outages -------------------------------------------------------------------------------


async def test_broker_restart_while_running(mqtt_broker: Broker) -> None:
    sink = Sink()
    sub = MqttSubscriber(settings(mqtt_broker, client_id="gw-restart"), [TEMPLATE], sink)
    async with running(sub):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", {"ts": 1, "balance": 5})
        await until(lambda: len(sink.got) == 1)
        await asyncio.to_thread(mqtt_broker.stop)
        await until(lambda: not sub.connected)
        await asyncio.sleep(0.3)  # a few failed attempts while it is down
        await asyncio.to_thread(mqtt_broker.start)
        await sub.wait_connected(5)
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-2", {"ts": 2, "balance": 5})
        await until(lambda: len(sink.got) == 2)
        health = sub.health()
    assert [r.meter_id for r in sink.got] == ["M-1", "M-2"]
    assert health["reconnects"] == 1
    assert health["disconnects"] == 1
    assert health["connect_failures"] >= 1


async def test_broker_down_at_start_keeps_retrying(mqtt_broker_stopped: Broker) -> None:
    broker = mqtt_broker_stopped
    sink = Sink()
    sub = MqttSubscriber(settings(broker, client_id="gw-late"), [TEMPLATE], sink)
    async with running(sub, connect=False):
        await until(lambda: sub.health()["connect_failures"] >= 3)
        assert not sub.connected
        assert "Connection refused" in (sub.health()["last_error"] or "")
        await asyncio.to_thread(broker.start)
        await sub.wait_connected(5)
        await publish_balance(broker.host, broker.port, "M-1", b"7")
        await until(lambda: len(sink.got) == 1)
    assert sink.got[0].meter_id == "M-1"
    assert sub.health()["reconnects"] == 0  # the first successful connection is not a reconnect


# -- scale-out and back-pressure ----------------------------------------------------------------


async def test_shared_subscription_splits_without_overlap(mqtt_broker: Broker) -> None:
    sinks = [Sink(), Sink()]
    subs = [
        MqttSubscriber(settings(mqtt_broker, client_id=f"gw-share-{i}"), [TEMPLATE], sinks[i], share_group="gw")
        for i in range(2)
    ]
    async with running(subs[0]), running(subs[1]):
        fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 10, seed=3)
        await fleet.start(run=False)
        try:
            for _ in range(4):
                await fleet.publish_round()
        finally:
            await fleet.stop()
        await until(lambda: len(sinks[0].got) + len(sinks[1].got) >= 40)
        await asyncio.sleep(0.2)  # nothing more (no duplicates) should trickle in
    a, b = set(sinks[0].keys()), set(sinks[1].keys())
    assert len(sinks[0].got) + len(sinks[1].got) == 40
    assert not a & b
    assert a | b == {(m, ts_of(ts)) for m, ts in fleet.updates}
    assert a and b  # both gateways got a share


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_full_inflight_window_pushes_back_without_dropping(mqtt_broker: Broker, protocol: str) -> None:
    # MQTT 5: the broker honours Receive Maximum. 3.1.1 has none: paho's thread waits for a slot.
    s = settings(mqtt_broker, client_id="gw-bp", max_inflight_acks=5, protocol=protocol)
    async with MqttConnection(s, ["payg/+/balance"]) as conn:
        await conn.wait_connected(5)
        for i in range(20):
            await publish_balance(mqtt_broker.host, mqtt_broker.port, f"M-{i}", str(i).encode())
        await asyncio.sleep(0.3)
        assert conn.messages == 5  # the window is full: the rest waits at the broker, un-acked
        seen: list[int] = []
        while len(seen) < 20:
            message = await asyncio.wait_for(conn.get(), 5)
            seen.append(int(message.payload))
            message.ack()
        assert sorted(seen) == list(range(20))
        assert conn.acks_sent == 20 and conn.acks_dropped == 0


async def test_ack_from_another_thread_is_handed_to_the_loop(mqtt_broker: Broker) -> None:
    sink = Sink(auto_ack=False)
    sub = MqttSubscriber(settings(mqtt_broker, client_id="gw-thread-ack"), [TEMPLATE], sink)
    async with running(sub):
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", b"1")
        await until(lambda: len(sink.got) == 1)
        ack = sink.got[0].ack
        assert ack is not None
        await asyncio.to_thread(ack)
        await until(lambda: sub.health()["acks_sent"] == 1)
        ack()  # a second ack is a no-op
        assert sub.health()["acks_sent"] == 1


async def test_keepalive_pings_an_idle_connection(mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    # paho's PINGREQ comes from loop_misc, which the connection runs from the event loop (there is
    # no paho thread); without it a strict broker drops a client silent for 1.5 x keepalive.
    caplog.set_level(logging.DEBUG, logger="drivers.mqtt.connection.paho")
    sink = Sink()
    sub = MqttSubscriber(settings(mqtt_broker, client_id="gw-idle", keepalive=1), [TEMPLATE], sink)
    async with running(sub):
        await until(lambda: sum("Received PINGRESP" in r.getMessage() for r in caplog.records) >= 2, timeout=10)
        assert sub.connected and sub.health()["disconnects"] == 0
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", b"1")
        await until(lambda: len(sink.got) == 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("paho")]


# -- nothing a message carries ends the receive loop (issue 22) ---------------------------------

class Fragile(MqttSubscriber):
    """A subscriber whose bookkeeping has a bug one payload triggers."""

    def _remember(self, meter_id: str | None, topic: str, payload: bytes, received_at: datetime) -> None:
        if payload.startswith(b"boom"):
            msg = "a bug nobody foresaw"
            raise RuntimeError(msg)
        super()._remember(meter_id, topic, payload, received_at)


async def test_a_message_that_breaks_the_routing_is_passed_on_as_of_no_known_meter(mqtt_broker: Broker) -> None:
    sink = Sink()
    sub = Fragile(settings(mqtt_broker, "gw-fragile"), [TEMPLATE], sink, known_meters={"M-1"})
    async with running(sub):
        for payload in (b"boom", b'{"ts": "2026-01-01T00:00:00Z"}'):
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "M-1", payload)
        await until(lambda: len(sink.got) == 2)
        connects = sub.health()["connects"]
    # Passed on (the pipeline makes it an unknown_meter dead letter and acks it); the next message
    # comes through the same receive loop, on the same connection.
    assert [(r.meter_id, r.payload) for r in sink.got] == \
        [(None, b"boom"), ("M-1", b'{"ts": "2026-01-01T00:00:00Z"}')]
    assert connects == 1
