"""Simulated Modbus and PAYG meters -> gateway -> store -> API, on both stores."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import publish_balance
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.shown import shown_float32


@pytest.fixture(params=["sqlite", "timescale"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "timescale":
        return "timescale", request.getfixturevalue("timescale_dsn")
    return "sqlite", None


async def test_modbus_and_payg_to_api(tmp_path: Path, mqtt_broker: Broker, backend: tuple[str, str | None]) -> None:
    name, dsn = backend
    generic = load_profiles()["generic"]
    # A frozen fleet (no updater): the values the API returns must equal what the meters hold.
    async with SimFleet(generic, 2, seed=7, update_interval=None) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, broker_port=mqtt_broker.port,
                             payg_ids=["P-0001"], backend=name, dsn=dsn, interval=0.3)
        async with running_gateway(cfg) as (_, api):
            r = await api.get("/v1/meters")
            assert r.status_code == 200
            assert [m["meter_id"] for m in r.json()["items"]] == ["M-0001", "M-0002", "P-0001"]

            async def latest() -> list[dict[str, Any]]:
                resp = await api.get("/v1/meters/M-0002/readings/latest")
                return resp.json()["items"] if resp.status_code == 200 else []

            rows = await eventually(latest)
            by_channel = {row["channel"]: row for row in rows}
            assert set(by_channel) == {r.channel.value for r in generic.registers}
            expected = shown_float32(fleet.words(2, 4, 0, 2))
            assert by_channel["energy_import"]["value"] == expected
            assert by_channel["energy_import"]["unit"] == "kWh"
            assert by_channel["energy_import"]["status"] == "valid"
            assert by_channel["voltage_l1"]["value"] == shown_float32(fleet.words(2, 4, 6, 2))

            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",
                            {"ts": "2026-11-01T10:00:00Z", "balance": "123.45", "currency": "KES",
                             "relay": "connected"})

            async def balance() -> dict[str, Any] | None:
                resp = await api.get("/v1/meters/P-0001/balance")
                return resp.json() if resp.status_code == 200 else None

            bal = await eventually(balance)
            assert Decimal(str(bal["balance"])) == Decimal("123.45")
            assert bal["currency"] == "KES" and bal["relay"] == "connected" and bal["low_credit"] is False

            # M-0001 polls in its own slot and may commit later than M-0002, whose readings were awaited above.
            async def m1_readings() -> list[dict[str, Any]]:
                resp = await api.get("/v1/meters/M-0001/readings", params={"channel": "energy_import"})
                return resp.json()["items"] if resp.status_code == 200 else []

            assert await eventually(m1_readings)

            ready = (await api.get("/readyz")).json()
            assert ready["ready"] is True, ready
            assert ready["storage_mode"] == ("sqlite" if name == "sqlite" else "timescaledb-apache")


async def test_bad_requests_get_clear_json_errors(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path / "gw")
    async with running_gateway(cfg) as (_, api):
        r = await api.get("/v1/meters/NOPE/readings/latest")
        assert r.status_code == 404 and r.json() == {"error": "not_found", "message": "meter 'NOPE' not found"}
        r = await api.get("/v1/meters", params={"limit": "lots"})
        assert r.status_code == 422 and "query.limit" in r.json()["message"]
        r = await api.get("/v1/meters", params={"cursor": "!!!"})
        assert r.status_code == 400 and "cursor" in r.json()["message"]
        assert (await api.get("/healthz")).json()["status"] == "ok"


async def test_the_running_gateway_reorders_closed_chunks_by_meter(tmp_path: Path, timescale_dsn: str) -> None:
    """With storage.reorder_chunks on (and retention off), the maintenance run CLUSTERs the
    closed readings chunks of the store it writes to: old data written by meter-interleaved
    polls ends up in meter order."""
    from datetime import UTC, datetime, timedelta

    import psycopg

    from gateway.model import Batch, Channel, Kind, Reading
    from storage.timescale.store import TimescaleStore

    t0 = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday: 7-day chunks start on Thursdays, so 3 chunks
    async with await TimescaleStore.open(timescale_dsn) as store:
        await store.migrate()
        await store.write(Batch(readings=[
            Reading(f"M-{m}", Channel.POWER, t0 + timedelta(hours=h), float(h), Kind.INSTANTANEOUS)
            for h in range(14 * 24) for m in range(3)]))  # fmt: skip

    def heap_in_order() -> list[bool]:
        # Autocommit (no lock outlives a statement) and, while the gateway runs, in a thread:
        # a query waiting for CLUSTER's lock must not stop the loop that will commit it.
        with psycopg.connect(timescale_dsn, autocommit=True) as conn:
            chunks = conn.execute("SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
                                  " WHERE hypertable_name = 'readings' ORDER BY range_start").fetchall()  # fmt: skip
            out = []
            for (chunk,) in chunks:
                heap = conn.execute(f"SELECT meter_id, ts FROM {chunk} ORDER BY ctid").fetchall()
                out.append(heap == sorted(heap))
            return out

    assert heap_in_order() == [False, False, False]
    cfg = gateway_config(tmp_path / "gw", backend="timescale", dsn=timescale_dsn,
                         storage={"reorder_chunks": True, "retention_check": 0.5})
    async with running_gateway(cfg, api_key=False):

        async def reordered() -> bool:
            return await asyncio.to_thread(heap_in_order) == [True, True, True]

        assert await eventually(reordered)
