"""A broker and a database stopped and restarted under a running gateway: each outage shows in
/readyz, /metrics, the status API and the status page, and each recovery shows there too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import publish_balance
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import eventually, gateway_config
from tests.fixtures.timescale import PgCluster


async def gauges(api: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, float]:
    resp = await api.get("/metrics", headers=auth)
    assert resp.status_code == 200, resp.text
    return {s.name: s.value for f in text_string_to_metric_families(resp.text) for s in f.samples if not s.labels}


async def views(api: httpx.AsyncClient, auth: dict[str, str]) -> tuple[dict[str, Any], dict[str, float],
                                                                           dict[str, Any], str]:
    """What each surface says now: /readyz, /metrics, /v1/diag/status, the page's panel."""
    ready = (await api.get("/readyz")).json()
    metrics = await gauges(api, auth)
    status = await api.get("/v1/diag/status", headers=auth)
    assert status.status_code == 200, status.text
    panel = await api.get("/status/panel", headers=auth)
    assert panel.status_code == 200, panel.text
    return ready, metrics, status.json(), panel.text


async def test_broker_stopped_and_restarted(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001"])
    async with running(cfg) as (gw, api):
        auth = await make_key(gw)
        await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected)
        await asyncio.to_thread(mqtt_broker.stop)

        async def down() -> tuple[Any, ...] | None:
            seen = await views(api, auth)
            return seen if not seen[2]["drivers"]["mqtt"]["connected"] else None

        ready, metrics, status, panel = await eventually(down)
        assert ready["ready"] is False and ready["failed"] == ["broker"]
        assert ready["checks"]["broker"] == {"ok": False, "detail": "disconnected"}
        assert metrics["meter_gateway_broker_connected"] == 0
        assert status["ready"] is False and status["failed"] == ["broker"]
        assert 'id="broker"' in panel and "DISCONNECTED" in panel and 'data-ready="false"' in panel

        await asyncio.to_thread(mqtt_broker.start)

        async def up() -> tuple[Any, ...] | None:
            seen = await views(api, auth)
            return seen if seen[0]["ready"] else None

        ready, metrics, status, panel = await eventually(up, timeout=60)
        assert metrics["meter_gateway_broker_connected"] == 1
        assert status["drivers"]["mqtt"]["connected"] is True and status["drivers"]["mqtt"]["reconnects"] >= 1
        assert 'data-ready="true"' in panel and "DISCONNECTED" not in panel
        # And it is really back: a balance sent now arrives.
        await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",
                              {"ts": "2026-11-01T10:00:00Z", "balance": "3.00", "currency": "KES"})

        async def state() -> bool:
            body = (await api.get("/v1/diag/meters/P-0001", headers=auth)).json()
            return bool(body["state"] == "ok" and body["last_balance"]["balance"] == "3.00")

        await eventually(state)


async def test_database_stopped_and_restarted(tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=8, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, backend="timescale",
                             dsn=timescale_dsn, interval=0.3)
        async with running(cfg) as (gw, api):
            auth = await make_key(gw)
            await eventually(lambda: _ready(api))
            await views(api, auth)  # the key has been used before the outage (Prometheus scrapes all the time)
            await asyncio.to_thread(pg_cluster.stop)
            try:
                async def down() -> tuple[Any, ...] | None:
                    seen = await views(api, auth)
                    spooled = seen[1].get("meter_gateway_spool_items", 0) > 0
                    return seen if not seen[0]["ready"] and seen[1]["meter_gateway_sink_up"] == 0 and spooled else None

                ready, metrics, status, panel = await eventually(down, timeout=60)
                assert "sink" in ready["failed"] and ready["checks"]["sink"]["detail"].startswith("unreachable")
                assert ready["storage_mode"].startswith("timescaledb")
                assert metrics["meter_gateway_spool_oldest_age_seconds"] > 0
                assert status["sink"]["up"] is False and status["sink"]["last_error"]
                assert status["spool"]["items"] > 0 and status["spool"]["oldest_age_s"] > 0
                assert status["events_from_store"] is False
                assert 'id="sink"' in panel and "DOWN" in panel
                # The meters are fine meanwhile: polls go on into the spool.
                fleet_body = (await api.get("/v1/diag/meters", headers=auth)).json()
                assert fleet_body["counts"]["ok"] == 2
            finally:
                await asyncio.to_thread(pg_cluster.start)

            async def recovered() -> tuple[Any, ...] | None:
                seen = await views(api, auth)
                drained = seen[2]["spool"]["rows"] == 0
                return seen if seen[0]["ready"] and seen[1]["meter_gateway_sink_up"] == 1 and drained else None

            _, _, status, panel = await eventually(recovered, timeout=90)
            assert status["sink"]["up"] is True and status["events_from_store"] is True
            assert 'id="sink"' in panel and "DOWN" not in panel


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/readyz")).status_code == 200
