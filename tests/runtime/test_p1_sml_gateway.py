"""A gateway with a P1 meter (and its gas meter) and an SML meter, each on a simulator's TCP port,
stores their readings with the decimals the meters show; bad [p1]/[sml] keys are config errors
naming the key and its line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.registry import DRIVERS
from gateway.config.load import parse_config
from gateway.errors import ConfigError
from gateway.runtime.gateway import Gateway
from simulators.p1.meter import SimP1Meter
from simulators.sml.meter import SimSmlMeter
from simulators.stream import TelegramServer
from tests.architecture.test_registry import running
from tests.fixtures.gateway import eventually

CONFIG = """\
[gateway]
id = "p1-sml"
data_dir = "{data}"

[api]
host = "127.0.0.1"
port = 0

[[p1.ports]]
name = "p1-a"
tcp = "{p1}"

[[sml.ports]]
name = "sml-a"
tcp = "{sml}"

[[meters]]
meter_id = "E-1"
protocol = "p1"
port = "p1-a"

[[meters]]
meter_id = "G-1"
utility = "gas"
protocol = "p1"
port = "p1-a"
mbus_channel = 1

[[meters]]
meter_id = "S-1"
protocol = "sml"
port = "sml-a"
"""


async def test_p1_and_sml_meters_are_stored_with_their_decimals(tmp_path: Path) -> None:
    # The P1 meter's clock is now: readings years old would be judged stale by plausibility.
    p1_meter, sml_meter = SimP1Meter(clock=datetime.now(UTC).replace(microsecond=0)), SimSmlMeter()
    async with TelegramServer(p1_meter.telegram, interval=0.05) as p1, \
            TelegramServer(sml_meter.frame, interval=0.05) as sml:
        text = CONFIG.format(data=tmp_path / "gw", p1=p1.address, sml=sml.address)
        cfg, profiles = parse_config(text, "p1.toml", env={}, drivers=DRIVERS)
        async with running(Gateway(cfg, profiles, drivers=DRIVERS)) as api:

            async def stored(meter: str) -> dict[str, Any]:
                resp = await api.get(f"/v1/meters/{meter}/readings", params={"limit": 1000})
                return {r["channel"]: r for r in resp.json()["items"]} if resp.status_code == 200 else {}

            e = await eventually(lambda: _has(stored("E-1"), "energy_import", "power", "voltage_l1"))
            g = await eventually(lambda: _has(stored("G-1"), "volume"))
            s = await eventually(lambda: _has(stored("S-1"), "energy_import", "energy_export", "power"))
            status = (await api.get("/v1/diag/status")).json()
            gas = (await api.get("/v1/diag/meters/G-1")).json()
    # The values as the meters show them: repr of the stored float is the meter's decimal.
    assert Decimal(repr(e["energy_import_t2"]["value"])) == Decimal("245.467")
    assert e["energy_import"]["kind"] == "cumulative" and e["energy_import"]["source"] == "p1"
    assert Decimal(repr(g["volume"]["value"])) == Decimal("246.138") and g["volume"]["unit"] == "m3"
    energy = Decimal(repr(s["energy_import"]["value"]))
    assert energy == energy.quantize(Decimal("0.0001")) and energy > Decimal("12345")  # 0.1 Wh steps, in kWh
    assert s["power"]["source"] == "sml"
    [link] = status["drivers"]["p1"]
    assert link["label"] == "p1 p1-a" and link["connected"] is True and link["meters"] == 2
    assert gas["protocol"] == "p1" and gas["where"] == f"p1 port p1-a (tcp {p1.address}) M-Bus channel 1"


async def _has(rows: Any, *channels: str) -> dict[str, Any] | None:
    got = await rows
    return got if all(c in got for c in channels) else None


def test_p1_config_errors_name_the_key_and_line(tmp_path: Path) -> None:
    text = CONFIG.format(data=tmp_path, p1="nohost", sml="127.0.0.1:1") + """
[[meters]]
meter_id = "E-2"
protocol = "p1"
port = "p1-a"

[[meters]]
meter_id = "S-2"
protocol = "sml"
port = "nowhere"
mbus_channel = 2
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p1.toml", env={}, drivers=DRIVERS)
    problems = [str(p) for p in info.value.problems]
    assert "p1.ports[0].tcp at line 11: 'nohost' is not host:port" in problems
    assert any(p.startswith("meters[3].port at line 37: meter E-2: port 'p1-a' already carries E-1") for p in problems)
    assert "meters[4].port at line 42: meter S-2: no sml port 'nowhere' (sml-a)" in problems
    assert "meters[4].mbus_channel at line 43: meter S-2: only P1 meters have an mbus_channel" in problems
