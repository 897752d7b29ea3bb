"""A driver plugs in through the registry alone: a test-only driver (tests/architecture/p1file.py),
passed to `Gateway(config, profiles, drivers=...)`, reaches the SQLite store, the change feed and
/v1/diag without a file of the tree knowing it; a meter naming no registered driver is a config error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.base import DriverSpec
from drivers.registry import DRIVERS
from gateway.config.load import parse_config
from gateway.errors import ConfigError
from gateway.runtime.gateway import Gateway
from storage.keys import Scope, new_key
from tests.architecture import p1file
from tests.fixtures.gateway import eventually

REGISTRY: dict[str, DriverSpec] = {**DRIVERS, p1file.SPEC.protocol: p1file.SPEC}

OBJECT_MAP = """\
name = "test-p1"

[[objects]]
code = "1-0:1.8.0"
channel = "energy_import"
unit = "kWh"
kind = "cumulative"

[[objects]]
code = "1-0:1.7.0"
channel = "power"
unit = "W"
"""

CONFIG = """\
[gateway]
id = "p1-test"
data_dir = "{data}"

[api]
host = "127.0.0.1"
port = 0

[p1file]
folder = "{folder}"
objects = "{objects}"

[[meters]]
meter_id = "P1-1"
protocol = "p1file"
file = "p1-1.txt"
consumer_number = "C-77"
"""


@contextlib.asynccontextmanager
async def running(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway running, with a client that holds an admin key."""
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await eventually(lambda: task.done() or (gw.store_ready.is_set() and gw.api_url is not None))
        if task.done():
            task.result()
        key, row = new_key("tests", frozenset({Scope.ADMIN}), datetime.now(UTC))
        assert gw.store is not None and gw.api_url is not None
        await gw.store.create_api_key(row)
        async with httpx.AsyncClient(base_url=gw.api_url, timeout=10,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def config_text(tmp_path: Path) -> str:
    folder = tmp_path / "telegrams"
    folder.mkdir()
    (tmp_path / "map.toml").write_text(OBJECT_MAP)
    return CONFIG.format(data=tmp_path / "gw", folder=folder, objects=tmp_path / "map.toml")


async def test_a_registered_driver_reaches_the_store_the_feed_and_diagnostics(tmp_path: Path) -> None:
    cfg, profiles = parse_config(config_text(tmp_path), "p1.toml", env={}, drivers=REGISTRY)
    gw = Gateway(cfg, profiles, drivers=REGISTRY)
    async with running(gw) as api:
        # What the meter sends: energy in Wh (the map's unit is kWh), power with no unit (the map
        # says W), and an equipment id the map does not list.
        (tmp_path / "telegrams" / "p1-1.txt").write_text("1-0:1.8.0 12345678 Wh\n1-0:1.7.0 1500\n0-0:96.1.1 4530\n")

        async def stored() -> list[dict[str, Any]]:
            resp = await api.get("/v1/meters/P1-1/readings")
            return resp.json()["items"] if resp.status_code == 200 else []

        rows = {r["channel"]: r for r in await eventually(stored)}
        assert set(rows) == {"energy_import", "power"}
        energy, power = rows["energy_import"], rows["power"]
        assert (energy["value"], energy["unit"], energy["kind"]) == (12345.678, "kWh", "cumulative")
        assert (power["value"], power["unit"], power["kind"]) == (1.5, "kW", "instantaneous")
        assert energy["source"] == power["source"] == "p1" and energy["status"] == "valid"

        feed = (await api.get("/v1/readings/feed")).json()
        assert {(r["meter_id"], r["channel"]) for r in feed["items"]} == {("P1-1", "energy_import"), ("P1-1", "power")}

        meter = (await api.get("/v1/meters/P1-1")).json()
        assert (meter["protocol"], meter["model"], meter["consumer_number"]) == ("p1", "test-p1", "C-77")

        status = (await api.get("/v1/diag/status")).json()
        [link] = status["drivers"]["p1file"]
        assert link["label"] == "p1file" and link["meters"] == 1 and link["readouts"] >= 1
        assert status["drivers"]["modbus"] == [] and status["drivers"]["mqtt"] is None
        diag = (await api.get("/v1/diag/meters/P1-1")).json()
        assert diag["protocol"] == "p1file" and diag["state"] == "ok" and diag["messages"] >= 1
        assert {r["channel"] for r in diag["recent_readings"]} == {"energy_import", "power"}
        assert diag["where"].startswith("p1 file ") and diag["endpoint"] is None
        poll = await api.post("/v1/diag/meters/P1-1/poll")
        assert poll.status_code == 400 and "pushes its data: it cannot be polled" in poll.json()["message"]


def test_a_meter_whose_protocol_names_no_registered_driver_is_a_config_error(tmp_path: Path) -> None:
    text = config_text(tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p1.toml", env={}, drivers=DRIVERS)  # the build's registry has no p1file
    assert [str(p) for p in info.value.problems] == [
        f"meters[0].protocol at line 15: unknown protocol; the registered drivers are {', '.join(DRIVERS)} (got 'p1file')",
        "meters[0].file at line 16: unknown key (check its spelling)",
        "p1file at line 9: unknown key (check its spelling)",
    ]


def test_a_gateway_refuses_a_config_validated_for_other_drivers(tmp_path: Path) -> None:
    cfg, profiles = parse_config(config_text(tmp_path), "p1.toml", env={}, drivers=REGISTRY)
    # The build's registry grows with each driver; the message names both lists.
    with pytest.raises(ValueError, match=f"validated for the drivers {', '.join(REGISTRY)}, the gateway runs {', '.join(DRIVERS)}"):
        Gateway(cfg, profiles, drivers=DRIVERS)
