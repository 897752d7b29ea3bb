"""simulators.mqtt.PaygFleet: deterministic balance updates over a real Mosquitto, with faults."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker
from simulators.mqtt import PaygFleet, SimPaygMeter


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


class Collector:
    """A plain paho subscriber (not our driver) so the simulator is checked independently."""

    def __init__(self, broker: Broker) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("payg/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mqtt_broker: Broker) -> Iterator[Collector]:
    c = Collector(mqtt_broker)
    assert c.ready.wait(5)
    yield c
    c.close()


def fake_clock() -> object:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    ticks = count()
    return lambda: start + timedelta(minutes=next(ticks))


async def until(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - state set by other threads
            await asyncio.sleep(0.01)


def test_same_seed_same_data() -> None:
    def run(seed: int) -> list[dict[str, object]]:
        meter = SimPaygMeter.create("P-1", seed)
        out = []
        for i in range(200):
            ts = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i)
            meter.step(ts)
            out.append(meter.message(ts))
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_credit_drains_relay_opens_at_zero_and_closes_after_topup() -> None:
    meter = SimPaygMeter.create("P-1", 1)
    meter.balance = Decimal("1.00")
    meter.rng.seed(0)
    seen: list[tuple[Decimal, str]] = []
    for i in range(300):
        meter.step(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i))
        seen.append((meter.balance, meter.relay))
    assert all((b <= 0) == (r == "disconnected") for b, r in seen)
    first_off = next(i for i, (_, r) in enumerate(seen) if r == "disconnected")
    assert any(r == "connected" for _, r in seen[first_off:])  # a top-up closed the relay again
    assert meter.last_topup_amount is not None
    assert all(b >= 0 for b, _ in seen)


async def test_publishes_schema_and_counts(mqtt_broker: Broker, collector: Collector) -> None:
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 3, seed=5, clock=fake_clock())  # type: ignore[arg-type]
    await fleet.start(run=False)
    try:
        for _ in range(2):
            await fleet.publish_round()
    finally:
        await fleet.stop()
    await until(lambda: len(collector.got) == 6)
    assert fleet.published == {"P-00001": 2, "P-00002": 2, "P-00003": 2}
    assert len(fleet.updates) == 6
    topic, payload = collector.got[0]
    assert topic == "payg/P-00001/balance"
    doc = json.loads(payload, parse_float=Decimal)
    assert doc["ts"] == "2024-05-01T00:00:00.000000Z"
    assert doc["currency"] == "KES"
    assert doc["relay"] in ("connected", "disconnected")
    assert isinstance(doc["balance"], Decimal) and doc["balance"].as_tuple().exponent == -2


async def test_faults(mqtt_broker: Broker, collector: Collector) -> None:
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 4, seed=2, clock=fake_clock())  # type: ignore[arg-type]
    fleet.set_fault("P-00001", "malformed_json")
    fleet.set_fault("P-00002", "wrong_type")
    fleet.set_fault("P-00003", "duplicate")
    fleet.set_fault("P-00004", "silence")
    with pytest.raises(ValueError, match="unknown fault"):
        fleet.set_fault("P-00001", "fire")
    await fleet.start(run=False)
    try:
        await fleet.publish_round()
        fleet.set_fault("P-00004", None)
        await fleet.publish_round()
    finally:
        await fleet.stop()
    await until(lambda: len(collector.got) == 9)
    by_meter: dict[str, list[bytes]] = {}
    for topic, payload in collector.got:
        by_meter.setdefault(topic.split("/")[1], []).append(payload)
    with pytest.raises(json.JSONDecodeError):
        json.loads(by_meter["P-00001"][0])
    assert json.loads(by_meter["P-00002"][0])["balance"] == "lots"
    assert len(by_meter["P-00003"]) == 4 and by_meter["P-00003"][0] == by_meter["P-00003"][1]
    assert len(by_meter["P-00004"]) == 1  # silent in round 1 only
    assert fleet.published == {"P-00001": 2, "P-00002": 2, "P-00003": 4, "P-00004": 1}
    # Only valid updates are listed, each once: the duplicate meter's two rounds and P-00004's second.
    assert sorted(m for m, _ in fleet.updates) == ["P-00003", "P-00003", "P-00004"]


async def test_background_run_and_stop(mqtt_broker: Broker, collector: Collector) -> None:
    async with PaygFleet(mqtt_broker.host, mqtt_broker.port, 2, interval=0.05) as fleet:
        await until(lambda: fleet.rounds >= 3)
    total = fleet.total_published
    await until(lambda: len(collector.got) >= total)
    assert total >= 4
