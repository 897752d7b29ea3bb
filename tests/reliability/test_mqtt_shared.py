"""SPEC §8: two gateways in one MQTT shared-subscription group, writing to one TimescaleDB. The
broker splits the PAYG load between them; the union in the store is complete, with no duplicates."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import psycopg

from simulators.broker import Broker
from simulators.mqtt import PaygFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

METERS = [f"P-{i:05d}" for i in range(1, 21)]


async def stored(dsn: str) -> tuple[int, dict[tuple[str, datetime], Decimal]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT meter_id, ts, balance FROM balances")
        rows = await cur.fetchall()
    return len(rows), {(m, ts): Decimal(str(b)) for m, ts, b in rows}


async def test_two_gateways_split_the_load_and_the_union_is_complete(tmp_path: Path, mqtt_broker: Broker,
                                                                     timescale_dsn: str) -> None:
    def config(name: str):  # type: ignore[no-untyped-def]
        cfg = gateway_config(tmp_path / name, broker_port=mqtt_broker.port, payg_ids=METERS, backend="timescale",
                             dsn=timescale_dsn, mqtt={"share_group": "payg", "client_id": f"gw-{name}"},
                             gateway={"id": name})
        assert cfg.gateway.data_dir == tmp_path / name
        return cfg

    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, len(METERS), seed=41, interval=0.05, meter_ids=METERS)
    async with contextlib.AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(running_gateway(config("gw-a")))
        b, _ = await stack.enter_async_context(running_gateway(config("gw-b")))
        for gw in (a, b):
            assert gw.subscriber is not None and gw.subscriber.subscriptions[0] == "$share/payg/payg/+/balance"
            await gw.subscriber.wait_connected(30)
        async with fleet:
            await eventually(lambda: len(fleet.updates) >= 400, timeout=60)
        expected = dict(fleet.balances)

        async def complete() -> bool:
            return len((await stored(timescale_dsn))[1]) >= len(expected)

        await eventually(complete, timeout=60)
        await asyncio.sleep(0.3)
        assert a.pipeline is not None and b.pipeline is not None
        shares = (a.pipeline.counters.balances, b.pipeline.counters.balances)
    rows, got = await stored(timescale_dsn)
    assert rows == len(got), "a balance update was stored twice"
    assert got == expected
    assert sum(shares) == len(expected)  # each message went to exactly one gateway...
    assert min(shares) > len(expected) // 5, shares  # ...and both carried a real part of the load
