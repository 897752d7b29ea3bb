"""A gateway with an [mbus] section reads simulated slaves (TCP converter and a socat pty line)
into its store: the registry line, the spec's facts and object maps, diagnostics, the API."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from gateway.runtime.config import GatewayConfig
from simulators.mbus.server import serve_pty, serve_tcp
from simulators.mbus.slave import Bus, heat, water
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


async def test_gateway_reads_mbus_meters_into_the_store(tmp_path: Path, serial_pair: tuple[str, str]) -> None:
    tcp_bus = Bus([water(5, 12345678, volume_l=54321), heat(7, 87654321, energy_kwh=4711)])
    server = await serve_tcp(tcp_bus)
    tty_bus = Bus([water(1, 11112222, volume_l=777)])
    serving = asyncio.create_task(serve_pty(tty_bus, serial_pair[0]))
    base = gateway_config(tmp_path / "gw")
    doc = base.model_dump(mode="json")
    doc["mbus"] = {"default_interval": 0.5, "buses": [
        {"name": "cellar", "host": "127.0.0.1", "port": server.sockets[0].getsockname()[1], "timeout": 0.5},
        {"name": "tty", "serial_port": serial_pair[1], "timeout": 1.0}]}
    doc["meters"] = [
        {"meter_id": "W-1", "protocol": "mbus", "utility": "water", "bus": "cellar", "primary_address": 5},
        {"meter_id": "H-1", "protocol": "mbus", "utility": "heat", "bus": "cellar",
         "secondary_address": "87654321", "mbus_map": "mbus_heat"},
        {"meter_id": "W-2", "protocol": "mbus", "utility": "water", "bus": "tty", "primary_address": 1},
    ]
    cfg = GatewayConfig.model_validate(doc)
    try:
        async with running_gateway(cfg) as (gw, api):
            async def latest(meter_id: str, n: int) -> dict[str, Any] | None:
                resp = await api.get(f"/v1/meters/{meter_id}/readings/latest")
                rows = {r["channel"]: r for r in resp.json()["items"]} if resp.status_code == 200 else {}
                return rows if len(rows) >= n else None

            w1 = await eventually(lambda: latest("W-1", 2))
            h1 = await eventually(lambda: latest("H-1", 5))
            w2 = await eventually(lambda: latest("W-2", 2))
            diag = (await api.get("/v1/diag/meters/H-1")).json()
            poll = (await api.post("/v1/diag/meters/W-1/poll")).json()
            status = gw.status()
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        server.close()
        await server.wait_closed()
    assert w1["volume"]["value"] == 54.321 and w2["volume"]["value"] == 0.777
    assert h1["heat_energy"]["value"] == 4711.0 and h1["temperature_flow"]["value"] == 65.12
    assert h1["power"]["value"] == 1.5
    assert diag["protocol"] == "mbus" and diag["state"] == "ok", diag
    assert "secondary 87654321" in diag["where"]
    # A technician's poll: the meter read at once, decoded through its map, nothing stored.
    assert {(r["channel"], r["value"]) for r in poll["values"]} == {("volume", 54.321), ("flow", 0.0)}, poll
    assert not poll["problems"]
    mbus = status["mbus"]
    assert set(mbus) == {"cellar", "tty"}
    assert mbus["cellar"]["H-1"]["last_read"]["manufacturer_data"] == "01 02 03"
