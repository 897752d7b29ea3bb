"""simulators.mqtt: deterministic PAYG meters over a real Mosquitto, with faults and commands."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker
from simulators.mqtt import FAULTS, PaygFleet, PaygPublisher, SimPaygMeter


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


class Collector:
    """A plain paho subscriber (not our driver) so the simulator is checked independently."""

    def __init__(self, broker: Broker, topic: str = "payg/#") -> None:
        self.got: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in list(self.got) if t == topic]


@pytest.fixture
def collector(mqtt_broker: Broker) -> Iterator[Collector]:
    c = Collector(mqtt_broker)
    assert c.ready.wait(5)
    yield c
    c.close()


def fake_clock() -> Callable[[], datetime]:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    ticks = count()
    return lambda: start + timedelta(minutes=next(ticks))


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state set by other threads
            await asyncio.sleep(0.01)


# -- the meter model (no broker) ------------------------------------------------------------------


def run_meter(seed: int, steps: int = 400) -> list[dict[str, object]]:
    meter = SimPaygMeter.create("P-1", seed)
    out = []
    for i in range(steps):
        ts = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i)
        meter.step(ts)
        out.append(meter.message(ts, "KES"))
    return out


def test_same_seed_same_data() -> None:
    assert run_meter(1) == run_meter(1)
    assert run_meter(1) != run_meter(2)


def test_consumption_follows_the_day() -> None:
    # One household with ample credit: the evening draws far more than the small hours.
    meter = SimPaygMeter.create("P-1", 3)
    meter.balance = Decimal(10**9)
    meter.rng.random = lambda: 0.99  # type: ignore[method-assign]  # no top-ups
    by_hour: dict[int, float] = {}
    for _ in range(96 * 20):  # 20 days of quarter hours
        before = meter.kwh
        hour = (meter.sim_time + timedelta(seconds=meter.step_s)).hour
        meter.step(datetime(2024, 5, 1, tzinfo=UTC))
        by_hour[hour] = by_hour.get(hour, 0.0) + meter.kwh - before
    assert by_hour[19] > 3 * by_hour[3]
    # Charged at the tariff, to the cent.
    charged = Decimal(10**9) - meter.balance
    assert abs(charged - Decimal(repr(meter.kwh)) * meter.tariff) < Decimal("0.01") * 96 * 20


def test_emergency_credit_then_relay_opens_then_topup_repays_and_reconnects() -> None:
    meter = SimPaygMeter.create("P-1", 1)
    meter.balance = Decimal("3.00")
    meter.rng.random = lambda: 0.99  # type: ignore[method-assign]  # no spontaneous top-ups
    ts = datetime(2024, 5, 1, tzinfo=UTC)
    states: list[tuple[Decimal, bool, Decimal, str]] = []
    for _ in range(2000):
        meter.step(ts)
        states.append((meter.balance, meter.emergency_in_use, meter.emergency_credit, meter.relay))
        if meter.relay == "disconnected":
            break
    assert meter.relay == "disconnected"
    assert meter.balance == 0 and meter.emergency_in_use and meter.emergency_credit == 0
    # Emergency credit switched in at zero credit and the relay stayed closed while it lasted.
    first_emergency = next(i for i, s in enumerate(states) if s[1])
    assert states[first_emergency][0] == 0 and states[first_emergency][3] == "connected"
    # A top-up first refills the emergency credit used (50.00), then 10 % goes to debt, rest is credit.
    meter.debt = Decimal("100.00")
    meter.topup(Decimal(200), ts)
    assert meter.emergency_credit == Decimal("50.00")
    assert meter.debt == Decimal("85.00") and meter.balance == Decimal("135.00")
    assert meter.relay == "connected" and not meter.emergency_in_use
    assert (meter.last_topup_amount, meter.last_topup_ts) == (Decimal(200), ts)


def test_commands_hold_the_relay_open() -> None:
    meter = SimPaygMeter.create("P-1", 1)
    meter.disconnect()
    meter.topup(Decimal(100), datetime(2024, 5, 1, tzinfo=UTC))
    assert meter.relay == "disconnected"  # a top-up does not undo a disconnect command
    meter.reconnect()
    assert meter.relay == "connected"


# -- the fleet over a broker ---------------------------------------------------------------------


async def test_publishes_schema_and_counts(mqtt_broker: Broker, collector: Collector) -> None:
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 3, seed=5, clock=fake_clock())
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
    assert fleet.balances[("P-00001", datetime(2024, 5, 1, tzinfo=UTC))] == doc["balance"]


async def test_reports_at_an_interval_and_on_change(mqtt_broker: Broker) -> None:
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 20, seed=9, clock=fake_clock(), report_every=4)
    await fleet.start(run=False)
    try:
        for _ in range(12):
            await fleet.publish_round()
    finally:
        await fleet.stop()
    per_meter = list(fleet.published.values())
    # Rounds 1, 4, 8, 12 for everyone; more for meters whose relay or credit changed in between.
    assert min(per_meter) >= 4
    assert sum(per_meter) < 20 * 12
    assert any(n > 4 for n in per_meter)


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_each_fault(mqtt_broker: Broker, collector: Collector, fault: str) -> None:
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 2, seed=2, clock=fake_clock(), burst_size=5)
    fleet.set_fault("P-00001", fault)
    await fleet.start(run=False)
    try:
        for _ in range(3):
            await fleet.publish_round()
    finally:
        await fleet.stop()
    await until(lambda: len(collector.got) >= fleet.total_published)
    sent = collector.on("payg/P-00001/balance")
    assert len(collector.on("payg/P-00002/balance")) == 3  # the healthy meter is not affected
    valid = [ts for m, ts in fleet.updates if m == "P-00001"]
    if fault == "malformed_json":
        for payload in sent:
            with pytest.raises(json.JSONDecodeError):
                json.loads(payload)
    elif fault in ("wrong_type", "missing_field", "oversized", "future_ts"):
        docs = [json.loads(p) for p in sent]
        assert len(docs) == 3 and not valid
        check: Callable[[dict[str, Any]], bool] = {
            "wrong_type": lambda d: d["balance"] == "lots",
            "missing_field": lambda d: "balance" not in d,
            "oversized": lambda d: len(json.dumps(d)) > 16384,
            "future_ts": lambda d: d["ts"].startswith("2024-05-02"),
        }[fault]
        assert all(check(d) for d in docs)
    elif fault == "duplicate":
        assert len(sent) == 6 and sent[0] == sent[1] and len(valid) == 3
    elif fault == "out_of_order":
        stamps = [json.loads(p)["ts"] for p in sent]
        assert len(stamps) == 2 and stamps[0] > stamps[1]  # round 2 came before round 1
        assert len(valid) == 2
    elif fault == "burst":
        assert len(sent) == 15 and len(set(sent)) == 15 and len(valid) == 15
    elif fault == "silence":
        assert sent == [] and not valid
    else:  # command faults: balances flow normally
        assert len(sent) == 3 and len(valid) == 3
    with pytest.raises(ValueError, match="unknown fault"):
        fleet.set_fault("P-00001", "fire")


async def test_answers_commands(mqtt_broker: Broker) -> None:
    replies = Collector(mqtt_broker, "payg/+/command/reply")
    assert replies.ready.wait(5)
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 3, seed=4)
    fleet.set_fault("P-00002", "reject_commands")
    fleet.set_fault("P-00003", "no_reply")
    await fleet.start(run=False)
    try:
        await fleet.wait_connected()
        before = fleet.meters["P-00001"].balance
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as account_system:
            await account_system.publish("payg/P-00001/command", json.dumps(
                {"correlation_id": "c-1", "command": "topup", "amount": 100, "reference": "PAY-1"}).encode())
            await account_system.publish("payg/P-00001/command", json.dumps(
                {"correlation_id": "c-2", "command": "disconnect"}).encode())
            await account_system.publish("payg/P-00002/command", json.dumps(
                {"correlation_id": "c-3", "command": "reconnect"}).encode())
            await account_system.publish("payg/P-00003/command", json.dumps(
                {"correlation_id": "c-4", "command": "topup", "amount": 5}).encode())
        await until(lambda: len(replies.got) == 3 and len(fleet.commands) == 4)
    finally:
        await fleet.stop()
        replies.close()
    got = {json.loads(p)["correlation_id"]: (t, json.loads(p)["status"]) for t, p in replies.got}
    assert got == {"c-1": ("payg/P-00001/command/reply", "acknowledged"),
                   "c-2": ("payg/P-00001/command/reply", "acknowledged"),
                   "c-3": ("payg/P-00002/command/reply", "failed")}
    meter = fleet.meters["P-00001"]
    assert meter.last_topup_amount == Decimal(100) and meter.balance > before
    assert meter.relay == "disconnected"
    # Each carried-out command was followed at once by a balance update ("on change").
    assert fleet.published["P-00001"] == 2
    assert [c["status"] for c in fleet.commands if c["meter_id"] == "P-00003"] == ["no reply"]


async def test_background_run_and_stop(mqtt_broker: Broker, collector: Collector) -> None:
    async with PaygFleet(mqtt_broker.host, mqtt_broker.port, 2, interval=0.05) as fleet:
        await until(lambda: fleet.rounds >= 3)
    total = fleet.total_published
    await until(lambda: len(collector.got) >= total)
    assert total >= 4


async def test_simulate_payg_command(mqtt_broker: Broker, collector: Collector) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "payg", "--meters", "4", "--port", str(mqtt_broker.port),
        "--interval", "0.05", "--rounds", "3", "--seed", "7", "--first", "11", "--fault", "P-00012=duplicate",
        "--fault", "P-00013=silence", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "4 simulated PAYG meters (P-00011..P-00014) publishing to 127.0.0.1:" in text
    assert "PAYG simulator: 3 rounds" in text and "duplicate" in text and "silence" in text
    await until(lambda: len(collector.got) == 3 + 6 + 0 + 3)
    assert {t.split("/")[1] for t, _ in collector.got} == {"P-00011", "P-00012", "P-00014"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "P-00001"], "write METER=FAULT"),
        (["--fault", "P-00001=fire"], "unknown fault 'fire'"),
        (["--fault", "P-00099=silence"], "no simulated meter 'P-00099'"),
    ],
)
async def test_simulate_payg_bad_options(args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "payg", "--meters", "2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert message in err.decode()
