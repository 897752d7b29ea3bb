"""Modbus configuration (transports, serial lines, per-meter schedules) and the gateway built
from it: a network of TCP, RTU-over-TCP and serial endpoints, polled into the store."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.config.profiles import load_profiles
from gateway.errors import ConfigError
from gateway.model import Protocol
from gateway.runtime.config import GatewayConfig, cross_check, parse_config
from gateway.runtime.gateway import meters_from_config
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.modbus import MakeFleet
from tests.fixtures.shown import shown_float32

CONFIG = """\
[modbus]
default_interval = 900
default_jitter = 30
breaker_failures = 4

[[modbus.endpoints]]
name = "tcp-gw"
host = "10.0.0.7"

[[modbus.endpoints]]
name = "old-rtu"
host = "10.0.0.8"
framer = "rtu"
timeout = 2.0

[[modbus.endpoints]]
name = "bus"
transport = "serial"
serial_port = "/dev/ttyUSB0"
baudrate = 2400
parity = "E"
stopbits = 1
retries = 2

[[meters]]
meter_id = "M-1"
endpoint = "tcp-gw"
unit = 1
profile = "sdm630"
interval = 60
align = false

[[meters]]
meter_id = "M-2"
endpoint = "old-rtu"
unit = 1

[[meters]]
meter_id = "M-3"
endpoint = "bus"
unit = 7
profile = "sdm120"
jitter = 0
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    return [str(p) for p in info.value.problems]


def test_transports_serial_lines_and_schedules_are_configured() -> None:
    cfg, _ = parse_config(CONFIG, "t.toml", env={})
    eps = {e.name: e for e in cfg.modbus.endpoints}
    assert [eps[n].kind for n in ("tcp-gw", "old-rtu", "bus")] == ["tcp", "rtu_tcp", "serial"]
    assert (eps["bus"].baudrate, eps["bus"].parity, eps["bus"].address) == (2400, "E", "/dev/ttyUSB0")
    meters = {m.meter_id: m for m in cfg.meters}
    assert (meters["M-1"].interval, meters["M-1"].align, meters["M-3"].jitter) == (60, False, 0)
    assert [(m.protocol, m.address) for m in meters_from_config(cfg)] == [
        (Protocol.MODBUS_TCP, "10.0.0.7:502/1"), (Protocol.MODBUS_RTU_TCP, "10.0.0.8:502/1"),
        (Protocol.MODBUS_RTU, "/dev/ttyUSB0/7")]


@pytest.mark.parametrize(("change", "expected"), [
    (('serial_port = "/dev/ttyUSB0"\n', ""),
     "modbus.endpoints[2].transport at line 18: transport 'serial' needs serial_port (e.g. /dev/ttyUSB0)"),
    (('framer = "rtu"', 'framer = "rtu"\ntransport = "tcp"'),
     "modbus.endpoints[1].framer at line 13: framer 'rtu' contradicts transport 'tcp' (use transport alone)"),
    (('host = "10.0.0.7"', ""), "modbus.endpoints[0].name at line 7: endpoint 'tcp-gw': transport 'tcp' needs host"),
    (("parity = \"E\"", "parity = \"X\""), "modbus.endpoints[2].parity at line 21: Input should be 'N', 'E' or 'O'"),
    (("breaker_failures = 4", "breaker_cooldown = 900\nbreaker_max_cooldown = 60"),
     "modbus.breaker_cooldown at line 4: 900 s exceeds breaker_max_cooldown 60 s"),
    (("jitter = 0", "jitter = -1"), "meters[2].jitter at line 43: Input should be greater than or equal to 0"),
])
def test_modbus_config_mistakes(change: tuple[str, str], expected: str) -> None:
    found = problems(CONFIG.replace(*change))
    assert any(p.startswith(expected) for p in found), found


async def test_gateway_polls_tcp_rtu_and_serial_endpoints_into_the_store(
    tmp_path: Path, make_modbus_fleet: MakeFleet, serial_pair: tuple[str, str]
) -> None:
    tcp: SimFleet = await make_modbus_fleet("sdm630", n=2, update_interval=None)
    rtu: SimFleet = await make_modbus_fleet("generic", n=1, update_interval=None, transport="rtu_tcp",
                                            meter_ids=["M-0003"])
    rtu.set_fault("M-0003", "tamper")
    serial: SimFleet = await make_modbus_fleet("sdm120", n=1, update_interval=None, transport="serial",
                                               serial_port=serial_pair[0], baudrate=9600, meter_ids=["M-0004"])
    endpoints: list[dict[str, Any]] = [
        {"name": "tcp", "host": "127.0.0.1", "port": tcp.port, "timeout": 0.5},
        {"name": "rtu", "host": "127.0.0.1", "port": rtu.port, "framer": "rtu", "timeout": 0.5},
        {"name": "bus", "transport": "serial", "serial_port": serial_pair[1], "baudrate": 9600, "timeout": 0.5},
    ]
    meters = [
        {"meter_id": "M-0001", "endpoint": "tcp", "unit": 1, "profile": "sdm630"},
        {"meter_id": "M-0002", "endpoint": "tcp", "unit": 2, "profile": "sdm630", "interval": 0.4, "align": False},
        {"meter_id": "M-0003", "endpoint": "rtu", "unit": 1, "profile": "generic"},
        {"meter_id": "M-0004", "endpoint": "bus", "unit": 1, "profile": "sdm120", "jitter": 0},
    ]
    base = gateway_config(tmp_path / "gw", interval=0.5)
    doc = base.model_dump(mode="json")
    doc["modbus"]["endpoints"], doc["meters"] = endpoints, meters
    cfg = GatewayConfig.model_validate(doc)
    assert not cross_check(cfg, load_profiles(), {})
    async with running_gateway(cfg) as (gw, api):
        assert gw.store is not None

        async def latest(meter_id: str) -> dict[str, dict[str, Any]]:
            resp = await api.get(f"/v1/meters/{meter_id}/readings/latest")
            return {r["channel"]: r for r in resp.json()["items"]} if resp.status_code == 200 else {}

        for meter_id, fleet, n_channels in (("M-0001", tcp, 11), ("M-0003", rtu, 7), ("M-0004", serial, 7)):
            rows = await eventually(partial(_complete, latest, meter_id, n_channels))
            unit = fleet.unit_of(meter_id)
            address = 0x48 if fleet is not rtu else 0
            words = fleet.words(unit, 4, address, 2)
            assert rows["energy_import"]["value"] == shown_float32(words)
        tampered = await latest("M-0003")
        assert all(r["status"] == "suspect" for r in tampered.values())
        status = gw.status()["modbus"]
        assert set(status) == {"tcp", "rtu", "bus"}
        assert status["tcp"]["M-0001"]["latency_p50_s"] is not None and status["bus"]["M-0004"]["failures"] == 0
        raw = await gw.poll_now("M-0004")
        assert raw.blocks[0].words == tuple(serial.words(1, 4, 0, 14))
        from gateway.model.profiles import Function

        assert await gw.read_registers("tcp", 2, Function.INPUT, 0x48, 2) == tuple(tcp.words(2, 4, 0x48, 2))


async def _complete(latest: Any, meter_id: str, n: int) -> dict[str, dict[str, Any]] | None:
    rows: dict[str, dict[str, Any]] = await latest(meter_id)
    return rows if len(rows) == n else None
