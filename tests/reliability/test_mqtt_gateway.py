"""The whole gateway against a real Mosquitto: bad payloads become dead letters and the rest goes
on, duplicates and late messages are stored once, PAYG events reach the store (and are not raised
again after a restart), commands are sent, tracked and recorded, payload formats are configurable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest, NotFound
from gateway.model import CommandStatus, EventKind
from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.mqtt import PaygFleet, publish_balance
from storage.base import Store
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def store_of(gw: Gateway) -> Store:
    assert gw.store is not None
    return gw.store


async def connected(gw: Gateway) -> None:
    assert gw.subscriber is not None
    await gw.subscriber.wait_connected(30)


async def test_every_bad_payload_is_a_dead_letter_and_the_subscriber_goes_on(tmp_path: Path,
                                                                              mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001", "P-0002"])
    now = datetime.now(UTC).replace(microsecond=0)
    bad: dict[str, tuple[str, Any]] = {
        "malformed_json": ("P-0001", b'{"ts": "2026-01-01T00:00:00Z", "balance": 1'),
        "wrong_type": ("P-0001", {"ts": iso(now), "balance": "lots"}),
        "missing_field": ("P-0001", {"ts": iso(now)}),
        "unknown_meter": ("P-9999", {"ts": iso(now), "balance": 1}),
        "oversized": ("P-0001", {"ts": iso(now), "balance": 1, "padding": "x" * 20_000}),
        "future_ts": ("P-0001", {"ts": iso(now + timedelta(days=1)), "balance": 1}),
        "not_an_object": ("P-0001", b"[1, 2]"),
        "bad_timestamp": ("P-0001", {"ts": "yesterday", "balance": 1}),
    }
    async with running_gateway(cfg) as (gw, _):
        await connected(gw)
        store = store_of(gw)
        for meter_id, payload in bad.values():
            await publish_balance(mqtt_broker.host, mqtt_broker.port, meter_id, payload)
        good = [{"ts": iso(now - timedelta(minutes=m)), "balance": f"{20 - m}.50", "currency": "KES"} for m in (0, 5)]
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", good[0])
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", good[0])  # a duplicate
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", good[1])  # older: out of order

        async def all_there() -> bool:
            dead = await store.deadletters(limit=100)
            rows = await store.balances("P-0002", start=now - timedelta(hours=1), end=now + timedelta(hours=1))
            return len(dead) >= len(bad) and len(rows) >= 2

        await eventually(all_there)
        await asyncio.sleep(0.3)  # nothing more (no second copy) should arrive
        dead = await store.deadletters(limit=100)
        rows = await store.balances("P-0002", start=now - timedelta(hours=1), end=now + timedelta(hours=1))
        assert gw.pipeline is not None
        counted = dict(gw.pipeline.counters.deadletters_by_reason)
    by_reason = {d.reason: d for d in dead}
    assert sorted(by_reason) == sorted(bad) and len(dead) == len(bad)
    assert counted == dict.fromkeys(bad, 1)
    for reason, (meter_id, _) in bad.items():
        d = by_reason[reason]
        assert d.source == "mqtt" and d.where == f"payg/{meter_id}/balance", d
        assert abs((d.ts - now).total_seconds()) < 300, d
    assert by_reason["unknown_meter"].meter_id is None
    assert by_reason["wrong_type"].detail == "topic payg/P-0001/balance: field 'balance' must be a number, got 'lots'"
    assert by_reason["malformed_json"].payload == '{"ts": "2026-01-01T00:00:00Z", "balance": 1'
    oversized = by_reason["oversized"].payload
    assert len(oversized) < 2200 and oversized.endswith(" bytes)")  # truncated, says how long it was
    # The good updates: each once, the late one kept in its place in the history.
    assert [(r.ts, r.balance) for r in rows] == [(now - timedelta(minutes=5), Decimal("15.50")),
                                                  (now, Decimal("20.50"))]


async def test_payg_events_reach_the_store_once_across_a_restart(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001"])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def update(minute: int, balance: str, **extra: Any) -> dict[str, Any]:
        return {"ts": iso(t0 + timedelta(minutes=minute)), "balance": balance, "currency": "KES",
                "relay": "connected", **extra}

    topup = {"amount": 200, "ts": iso(t0 + timedelta(minutes=50))}
    sequence = [
        update(0, "20.00"),
        update(10, "4.00"),  # low credit (threshold 5)
        update(20, "0.00", emergency_credit_in_use=True, emergency_credit=40),  # exhausted + emergency
        update(30, "0.00", emergency_credit_in_use=True, emergency_credit=0, relay="disconnected"),
        update(60, "150.00", last_topup=topup),  # top-up, relay closes
    ]
    expected = ["low_credit", "credit_exhausted", "emergency_credit", "relay_disconnected", "topup",
                "relay_connected"]
    async with running_gateway(cfg) as (gw, _):
        await connected(gw)
        for doc in sequence:
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001", doc)

        async def kinds() -> list[str]:
            events = await store_of(gw).events(meter_id="P-0001", limit=100)
            return [e.kind.value for e in reversed(events)]

        assert await eventually(lambda: _when(kinds, len(expected))) == expected
    # A new process, same data: the checker is seeded from the store, so a re-delivered message and
    # a still-low balance raise nothing new; a fresh drop to low credit does.
    async with running_gateway(cfg) as (gw, _):
        await connected(gw)
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001", sequence[-1])
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",
                              update(70, "3.00", last_topup=topup))
        await eventually(lambda: _when(kinds, len(expected) + 1))
        await asyncio.sleep(0.3)
        assert await kinds() == [*expected, "low_credit"]


async def _when(probe: Any, n: int) -> Any:
    value = await probe()
    return value if len(value) >= n else None


async def test_commands_are_sent_tracked_and_recorded(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-00001", "P-00002"])
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 2, seed=3)
    async with running_gateway(cfg) as (gw, _), fleet:
        await connected(gw)
        await eventually(lambda: gw.store_ready.is_set())
        await fleet.wait_connected()
        command = await gw.send_command("P-00001", "topup", Decimal("100.00"), "PAY-9")
        assert command.status is CommandStatus.PENDING and command.correlation_id.startswith("test.")

        async def settled() -> Any:
            stored = await store_of(gw).get_command(command.correlation_id)
            return stored if stored is not None and stored.status is CommandStatus.ACKNOWLEDGED else None

        stored = await eventually(settled)
        assert (stored.amount, stored.reference, stored.meter_id) == (Decimal("100.00"), "PAY-9", "P-00001")
        assert (await gw.get_command(command.correlation_id)).status is CommandStatus.ACKNOWLEDGED

        async def command_event() -> Any:
            events = await store_of(gw).events(meter_id="P-00001", kind=EventKind.COMMAND, limit=10)
            return [e for e in events if e.detail.startswith("command topup")]

        (event,) = await eventually(command_event)
        assert command.correlation_id in event.detail and "acknowledged by the meter" in event.detail
        with pytest.raises(NotFound):
            await gw.send_command("M-0001", "disconnect")
        with pytest.raises(InvalidRequest):
            await gw.send_command("P-00001", "topup", Decimal("-5"))
        with pytest.raises(NotFound):
            await gw.get_command("test.nope")
    assert fleet.meters["P-00001"].last_topup_amount == Decimal("100.00")


async def test_field_mapping_number_format_and_epoch_millis(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(
        tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001", "P-0002"],
        mqtt={"topics": ["vendor/{meter_id}/state"], "timestamp": "epoch_ms",
              "field_mapping": {"balance": "/credit/remaining", "ts": "/t", "relay": "/supply"},
              "sources": [{"topic": "legacy/{meter_id}/credit", "payload_format": "number"}]})
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    async with running_gateway(cfg) as (gw, _):
        await connected(gw)
        assert set(gw.subscriber.subscriptions) >= {"vendor/+/state", "legacy/+/credit"}  # type: ignore[union-attr]
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",
                              {"t": int(t.timestamp() * 1000), "credit": {"remaining": "42.10"}, "supply": "connected"},
                              topic="vendor/{meter_id}/state")
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", b"17.25", topic="legacy/{meter_id}/credit")
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",  # seconds, but ms configured
                              {"t": int(t.timestamp()), "credit": {"remaining": "1"}}, topic="vendor/{meter_id}/state")

        async def both() -> Any:
            a = await store_of(gw).latest_balance("P-0001")
            b = await store_of(gw).latest_balance("P-0002")
            return (a, b) if a and b else None

        a, b = await eventually(both)
    assert (a.ts, a.balance, a.relay.value if a.relay else None, a.currency) == (t, Decimal("42.10"), "connected", "KES")
    assert b.balance == Decimal("17.25") and b.currency == "KES"
    assert b.received_at is not None and b.ts == b.received_at  # a bare number is measured at receipt
