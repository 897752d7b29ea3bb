"""`meter-gateway scan` against simulated buses over real TCP: meters of several makes, silent units,
a meter no profile fits, an endpoint that never answers and one that refuses the connection.

The simulated meters serve their models' own register tables (simulators/modbus/datasheets/), not
the profiles the scan tries: a scan that names the right profile found it by reading the meter.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drivers.base import ScanReport, ScanRequest
from drivers.registry import DRIVERS
from gateway.cli import app
from gateway.config.profiles import load_profiles
from gateway.runtime.config import parse_config
from gateway.scan_cli import ScanUsageError, build_request, config_text, parse_units
from simulators.modbus import SimFleet

PROFILES = load_profiles()
#: A bus as an installer leaves it: a few makes on scattered unit ids.
BUS = {3: "sdm630", 7: "abb_b23", 12: "cg_em340", 20: "janitza_umg96rm", 25: "sdm72dm", 28: "aquametro_calec_st"}
#: What the scan must name for each unit (a set where profiles read the very same registers).
EXPECTED = {3: {"sdm630", "sdm72dm_v2"}, 7: {"abb_b23"}, 12: {"cg_em340", "cg_et340"},
            20: {"janitza_umg96rm"}}


class RecordingFleet(SimFleet):
    """A fleet that notes every request's function code and whether it would write."""

    functions: list[int]
    writes: int

    async def _answer(self, unit: int, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None) -> Any:
        self.functions.append(function_code)
        self.writes += set_values is not None
        return await super()._answer(unit, function_code, start_address, address, count, registers, set_values)


@pytest.fixture(params=["tcp", "rtu_tcp"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[RecordingFleet]:
    """Over Modbus TCP an empty unit id is answered by the gateway (exception 11); behind a
    transparent RTU-over-TCP gateway it is silent, and each costs the scan a timeout."""
    fleet = RecordingFleet.mixed({u: PROFILES[name] for u, name in BUS.items()}, seed=3, update_interval=None,
                                 transport=request.param, silent_absent=request.param == "rtu_tcp")
    assert isinstance(fleet, RecordingFleet)
    fleet.functions, fleet.writes = [], 0
    async with fleet:
        yield fleet


async def scan(request: ScanRequest) -> ScanReport:
    scanner = DRIVERS["modbus"].scan
    assert scanner is not None
    seen: list[int] = []
    report = await scanner(request, PROFILES, lambda done, _total: seen.append(done))
    assert seen == list(range(1, report.probed + 1))  # progress after every unit
    return report


async def test_scan_names_each_meters_profile_and_skips_silent_units(bus: RecordingFleet) -> None:
    request = ScanRequest(bus.transport, host="127.0.0.1", port=bus.port, timeout=0.2, units=parse_units("1-30"))
    report = await scan(request)
    assert report.stopped is None and report.probed == report.wanted == 30
    found = {hit.unit: hit for hit in report.hits}
    assert set(found) == {3, 7, 12, 20, 25, 28}  # the rest of 1-30 is empty (silent, or refused by the gateway)
    for unit, names in EXPECTED.items():
        hit = found[unit]
        assert hit.profile in names and set(hit.alternatives) <= names, (unit, hit)
        assert "voltage_l1" in hit.how and "frequency" in hit.how
    # The first SDM72D-M has neither voltage nor frequency registers: it answers, nothing fits.
    assert found[25].profile is None
    # The heat meter has no voltage either, but a model-code register that names it.
    assert found[28].profile == "aquametro_calec_st" and found[28].how == "model code 0x00c0 at holding 0x0000"
    # Read functions only: a scan never writes to a device.
    assert set(bus.functions) <= {3, 4} and bus.writes == 0
    # What it prints is a configuration the gateway accepts, with the profiles found.
    text = config_text(report, request, "bus1")
    cfg, _ = parse_config(text, "scan.toml", env={})
    assert {(m.unit, m.profile) for m in cfg.meters} == {(u, found[u].profile) for u in (*EXPECTED, 28)}


async def test_scan_of_an_endpoint_that_never_answers_ends_within_its_bound_and_says_so() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads every request, answers none
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        request = ScanRequest("tcp", host="127.0.0.1", port=port, timeout=0.2, budget=1.0)
        report = await asyncio.wait_for(scan(request), 30)  # a hang guard, not a timing assertion
    assert report.hits == ()
    assert 0 < report.probed < report.wanted == 247
    assert report.stopped is not None
    assert "time bound of 1 s was spent" in report.stopped and f"not probed: {report.probed + 1}-247" in report.stopped


async def test_scan_of_an_endpoint_that_refuses_the_connection_says_so() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        report = await scan(ScanRequest("tcp", host="127.0.0.1", port=port, timeout=0.2, units=(1, 2, 3)))
    assert report.hits == () and report.probed == 0
    assert report.stopped is not None and report.stopped.startswith(f"cannot reach 127.0.0.1:{port}")
    assert "retry" not in report.stopped


async def test_the_scan_command_prints_a_table_and_meters_to_paste() -> None:
    fleet = SimFleet.mixed({4: PROFILES["finder_7m38"], 5: PROFILES["inepro_pro380"]}, update_interval=None)
    async with fleet:
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["scan", f"127.0.0.1:{fleet.port}", "--units", "1-6", "--timeout", "0.3",
                                      "--name", "lab"])
    assert result.exit_code == 0, result.output
    assert "[[meters]]" in result.output and 'endpoint = "lab"' in result.output
    assert 'unit = 4\nprofile = "finder_7m38"' in result.output
    assert 'unit = 5\nprofile = "inepro_pro380"' in result.output
    assert "2 meter(s) identified, 0 unknown, on 6 of 6 unit ids probed" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["nohost:notaport"], "target 'nohost:notaport': want host:port"),
    (["127.0.0.1:502", "--units", "0-3"], "unit ids are 1..247"),
    (["127.0.0.1:502", "--units", "a-b"], "want ranges like 1-247"),
    (["127.0.0.1:502", "--transport", "udp"], "--transport 'udp': use tcp, rtu_tcp or serial"),
    (["127.0.0.1:502", "--budget", "0"], "must be above 0 seconds"),
])
def test_scan_command_mistakes_are_named(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["scan", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_device_path_means_a_serial_scan() -> None:
    request = build_request("/dev/ttyUSB0", transport=None, units="1-3", timeout=0.5, budget=10, baudrate=19200,
                            parity="E")
    assert (request.transport, request.serial_port, request.baudrate, request.parity) == ("serial", "/dev/ttyUSB0",
                                                                                         19200, "E")
    with pytest.raises(ScanUsageError, match="--parity 'X'"):
        build_request("/dev/ttyUSB0", transport=None, units="1", timeout=1, budget=1, baudrate=9600, parity="X")


async def test_scan_of_a_serial_line(serial_pair: tuple[str, str]) -> None:
    """An RS-485 line on this machine (a pty pair): empty unit ids are silent, as on a real line."""
    server_end, client_end = serial_pair
    fleet = SimFleet.mixed({2: PROFILES["sdm120"], 4: PROFILES["orno_we514"]}, update_interval=None,
                           transport="serial", serial_port=server_end, baudrate=19200)
    async with fleet:
        request = build_request(client_end, transport=None, units="1-5", timeout=0.3, budget=60, baudrate=19200,
                                parity="N")
        report = await scan(request)
    assert report.stopped is None and report.probed == 5
    assert {(h.unit, h.profile) for h in report.hits} == {(2, "sdm120"), (4, "orno_we514")}
    assert set(report.hits[0].alternatives) <= {"sdm230"}  # the SDM230 reads the same registers


CONFIG = """\
[modbus]
profile_dirs = ["{folder}"]

[[modbus.endpoints]]
name = "gw1"
host = "127.0.0.1"
port = {port}
transport = "rtu_tcp"
timeout = 0.25
"""
#: A site's own profile, in the configuration's profile folder: the scan tries it too.
SITE_PROFILE = """\
[profile]
name = "site_meter"
manufacturer = "Acme"
model = "X1"
document = "Acme X1 register map v2"

[[identify]]
function = "holding"
address = 0
values = [0xC0]

[[registers]]
channel = "heat_energy"
function = "holding"
address = 100
type = "float32"
unit = "kWh"
kind = "cumulative"
"""


async def test_scan_of_a_configured_endpoint_uses_its_settings_and_profile_folders(tmp_path: Path) -> None:
    fleet = SimFleet.mixed({6: PROFILES["aquametro_calec_st"]}, update_interval=None, transport="rtu_tcp",
                           silent_absent=True)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "site.toml").write_text(SITE_PROFILE)
    async with fleet:
        (tmp_path / "gw.toml").write_text(CONFIG.format(folder=tmp_path / "profiles", port=fleet.port))
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["scan", "--config", str(tmp_path / "gw.toml"), "--endpoint", "gw1",
                                      "--units", "5-7"])
    assert result.exit_code == 0, result.output
    # The site's profile reads the same model code: named beside the shipped one (alphabetical first).
    assert 'unit = 6\nprofile = "aquametro_calec_st"   # same registers: site_meter' in result.output
    assert 'endpoint = "gw1"' in result.output and 'transport = "rtu_tcp"' in result.output
    assert "timeout = 0.25" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--endpoint", "gw1"], "give a target (host:port or a serial device), or --config with --endpoint"),
    (["127.0.0.1:502", "--config", "x.toml", "--endpoint", "gw1"], "not both"),
])
def test_scan_needs_a_target_or_a_configured_endpoint(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["scan", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_scan_names_an_endpoint_the_configuration_lacks(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "gw.toml").write_text(CONFIG.format(folder=tmp_path / "profiles", port=502))
    result = CliRunner().invoke(app, ["scan", "-c", str(tmp_path / "gw.toml"), "--endpoint", "gw9"])
    assert result.exit_code == 2
    assert "--endpoint 'gw9' is not in" in result.output and "(known: gw1)" in result.output.replace("\n", "")
