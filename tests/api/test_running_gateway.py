"""The account-system API served by a running gateway: the configured meters, and the fleet
summary's silent rule from each meter's poll interval."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config.profiles import load_profiles
from gateway.runtime.config import GatewayConfig
from simulators.modbus import SimFleet
from tests.api.helpers import ok
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.ports import free_port


async def test_a_meter_that_stops_answering_becomes_silent_after_three_intervals(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=3, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=1.0)
        async with running_gateway(cfg) as (_, api):
            async def both_seen() -> bool:
                body = await ok(api.get("/v1/fleet/summary"))
                return bool(body["silent"] == 0)

            await eventually(both_seen, timeout=30)
            fleet.meters[2].fault = "timeout"

            async def silent() -> list[dict[str, Any]] | None:
                found = (await ok(api.get("/v1/fleet/silent")))["items"]
                return found if [s["meter_id"] for s in found] == ["M-0002"] else None

            [quiet] = await eventually(silent, timeout=30)
            assert (await ok(api.get("/v1/fleet/summary")))["silent"] == 1
            assert quiet["silent_after_s"] == 3.0
            assert quiet["last_seen"] is not None
            meters = await ok(api.get("/v1/meters"))
            assert [(m["meter_id"], m["consumer_number"]) for m in meters["items"]] == [("M-0001", "C-1"),
                                                                                        ("M-0002", "C-2")]


async def test_api_edits_survive_a_restart(tmp_path: Path) -> None:
    # A meter that never answers (nothing listens on its port): only its registry entry matters here.
    doc = gateway_config(tmp_path / "gw", modbus_port=free_port(), n_modbus=1).model_dump(mode="json",
                                                                                         exclude_unset=True)
    doc["meters"][0].update(location="From file")
    cfg = GatewayConfig.model_validate(doc)
    async with running_gateway(cfg) as (_, api):
        await ok(api.patch("/v1/meters/M-0001", json={"tags": {"k": "v"}, "status": "maintenance",
                                                      "location": "From API"}))
        await ok(api.post("/v1/meters/M-0001/assignments", json={"consumer_number": "C-2",
                                                                 "start": datetime.now(UTC).isoformat()}), 201)
    async with running_gateway(cfg) as (_, api):
        got = await ok(api.get("/v1/meters/M-0001"))
    # The file sets the location (it wins at start); tags, status and the consumer come from the API.
    assert (got["location"], got["tags"], got["status"], got["consumer_number"]) == (
        "From file", {"k": "v"}, "maintenance", "C-2")
