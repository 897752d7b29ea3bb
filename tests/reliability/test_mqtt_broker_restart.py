"""SPEC §7: the broker restarts (with persistence) while PAYG meters publish at QoS 1. After it
returns, every update the broker acknowledged is in the store exactly once, with its balance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.mqtt import PaygFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


async def stored(gw: Gateway, meter_ids: list[str]) -> dict[tuple[str, datetime], Decimal]:
    """Every stored balance update of these meters, by key (a duplicate key would show in the count)."""
    assert gw.store is not None
    out: dict[tuple[str, datetime], Decimal] = {}
    count = 0
    for meter_id in meter_ids:
        rows = await gw.store.balances(meter_id, start=datetime(2000, 1, 1, tzinfo=UTC),
                                       end=datetime(2100, 1, 1, tzinfo=UTC), limit=100_000)
        count += len(rows)
        out.update({(r.meter_id, r.ts): r.balance for r in rows})
    assert count == len(out), "a balance update was stored twice"
    return out


async def test_broker_restart_while_meters_publish(tmp_path: Path, mqtt_broker: Broker) -> None:
    ids = [f"P-{i:05d}" for i in range(1, 11)]
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=ids)
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, len(ids), seed=21, interval=0.05, meter_ids=ids)
    async with running_gateway(cfg) as (gw, _):
        assert gw.subscriber is not None
        await gw.subscriber.wait_connected(30)
        await fleet.start()
        try:
            await eventually(lambda: len(fleet.updates) >= 100)
            before = len(fleet.updates)
            await asyncio.to_thread(mqtt_broker.restart)  # SIGTERM: Mosquitto saves sessions and queues
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.health()["reconnects"] >= 1)
            await eventually(lambda: len(fleet.updates) >= before + 100, timeout=60)
        finally:
            await fleet.stop()
        expected = dict(fleet.balances)

        async def complete() -> bool:
            return len(await stored(gw, ids)) >= len(expected)

        await eventually(complete, timeout=60)
        await asyncio.sleep(0.3)  # a late duplicate would arrive now
        got = await stored(gw, ids)
    assert got == expected
