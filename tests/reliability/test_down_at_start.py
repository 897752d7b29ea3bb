"""A database or broker that is down when the gateway starts: the gateway starts anyway,
says what is down (/readyz), keeps the readings in the spool, and catches up when it returns."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import psycopg

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import publish_balance
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.timescale import PgCluster


async def test_database_down_at_start(tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str) -> None:
    pg_cluster.stop()
    async with SimFleet(load_profiles()["generic"], 2, seed=5, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, backend="timescale",
                             dsn=timescale_dsn, interval=0.2)
        async with running_gateway(cfg) as (gw, api):
            assert gw.spool is not None
            await eventually(lambda: gw.spool is not None and gw.spool.stats().items >= 7 * 2 * 3)
            ready = await api.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["sink"]["ok"] is False
            r = await api.get("/v1/meters/M-0001/readings/latest")
            assert r.status_code == 503 and r.json()["error"] == "storage_unavailable"

            await asyncio.to_thread(pg_cluster.start)

            async def ready_and_drained() -> bool:
                resp = await api.get("/readyz")
                return resp.status_code == 200 and gw.spool is not None and gw.spool.stats().rows == 0

            await eventually(ready_and_drained, timeout=60)
            r = await api.get("/v1/meters/M-0001/readings/latest")
            assert r.status_code == 200 and len(r.json()["items"]) == 7
    # Everything spooled while the database was down arrived, each key once.
    async with await psycopg.AsyncConnection.connect(timescale_dsn) as conn:
        cur = await conn.execute("SELECT count(*), count(DISTINCT (meter_id, channel, ts)) FROM readings")
        rows, keys = await cur.fetchone() or (0, 0)
    assert rows == keys and rows >= 7 * 2 * 3


async def test_broker_down_at_start(tmp_path: Path, mqtt_broker_stopped: Broker) -> None:
    broker = mqtt_broker_stopped
    cfg = gateway_config(tmp_path / "gw", broker_port=broker.port, payg_ids=["P-0001"])
    async with running_gateway(cfg) as (_, api):
        ready = (await api.get("/readyz")).json()
        assert ready["ready"] is False and ready["checks"]["broker"] == {"ok": False, "detail": "disconnected"}
        await asyncio.to_thread(broker.start)

        async def broker_ok() -> bool:
            return bool((await api.get("/readyz")).json()["checks"]["broker"]["ok"])

        await eventually(broker_ok, timeout=60)
        await publish_balance(broker.host, broker.port, "P-0001",
                              {"ts": "2026-11-01T10:00:00Z", "balance": "7.50", "currency": "KES"})

        async def balance() -> str | None:
            resp = await api.get("/v1/meters/P-0001/balance")
            return resp.json()["balance"] if resp.status_code == 200 else None

        assert Decimal(await eventually(balance)) == Decimal("7.50")
