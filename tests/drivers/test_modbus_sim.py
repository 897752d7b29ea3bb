"""SimMeter / SimFleet: deterministic data, encodings honoured, faults."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta

import pytest

from gateway.model.meters import Utility
from gateway.model.profiles import ByteOrder, DataType, DeviceProfile, Function, RegisterSpec
from gateway.model.readings import Channel
from simulators.modbus import SimFleet, SimMeter
from tests.fixtures.modbus import MakeFleet, profile

START = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)


def wire(words: list[int]) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


def make_profile(*specs: RegisterSpec) -> DeviceProfile:
    return DeviceProfile("t", "t", "t", "t", Utility.ELECTRICITY, specs)


def test_same_seed_same_data() -> None:
    a, b, c = (SimMeter("M-1", seed=s, start=START) for s in (7, 7, 8))
    for meter in (a, b, c):
        for minutes in range(0, 24 * 60, 15):
            meter.tick(START + timedelta(minutes=minutes))
    generic = profile("generic")
    assert a.encode(generic) == b.encode(generic)
    assert a.encode(generic) != c.encode(generic)


def test_energy_follows_power_and_never_goes_down() -> None:
    meter = SimMeter("M-1", seed=3, start=START)
    readings = []
    for minutes in range(0, 24 * 60, 5):
        meter.tick(START + timedelta(minutes=minutes))
        readings.append(meter.energy_import)
    assert readings == sorted(readings) and readings[-1] > readings[0]
    assert meter.voltage == pytest.approx(230, abs=10) and meter.frequency == pytest.approx(50, abs=0.2)
    assert meter.current == pytest.approx(abs(meter.power) * 1000 / (meter.voltage * meter.power_factor))


def test_encode_honours_type_order_unit_scale_offset_and_modulus() -> None:
    meter = SimMeter("M-1", seed=1, start=START, energy_import=1234.5678)
    specs = {
        "wh_cdab": RegisterSpec(Channel.ENERGY_IMPORT, Function.HOLDING, 0, DataType.UINT32, ByteOrder.CDAB, unit="Wh"),
        "v_scaled": RegisterSpec(Channel.VOLTAGE_L1, Function.INPUT, 0, DataType.INT16, scale=0.1, unit="V"),
        "w_badc": RegisterSpec(Channel.POWER, Function.INPUT, 2, DataType.FLOAT32, ByteOrder.BADC, unit="W"),
        "f_offset": RegisterSpec(Channel.FREQUENCY, Function.INPUT, 4, DataType.UINT16, scale=0.01, offset=40.0),
        "e_dcba": RegisterSpec(Channel.ENERGY_IMPORT, Function.INPUT, 6, DataType.FLOAT64, ByteOrder.DCBA, unit="kWh",
                               modulus=1000.0),
    }
    image = meter.encode(make_profile(*specs.values()))
    assert struct.unpack(">I", wire(image[(3, 0)][::-1]))[0] == round(1234.5678 * 1000)
    assert struct.unpack(">h", wire(image[(4, 0)]))[0] == round(meter.voltage * 10)
    swapped = b"".join(w.to_bytes(2, "little") for w in image[(4, 2)])
    assert struct.unpack(">f", swapped)[0] == pytest.approx(meter.power * 1000, rel=1e-6)
    assert struct.unpack(">H", wire(image[(4, 4)]))[0] == round((meter.frequency - 40) / 0.01)
    assert struct.unpack("<d", wire(image[(4, 6)]))[0] == pytest.approx(234.5678)  # wrapped at 1000 kWh


def test_faults_that_change_the_words() -> None:
    meter = SimMeter("M-1", seed=1, start=START, energy_import=500.0)
    generic = profile("generic")
    meter.fault = "garbage"
    assert set(meter.encode(generic)[(4, 0)]) == {0xFFFF}
    meter.fault = "regression"
    assert meter.value(Channel.ENERGY_IMPORT) == pytest.approx(500.0 - meter.regression_kwh)
    meter.fault = None
    assert meter.value(Channel.ENERGY_IMPORT) == pytest.approx(500.0)
    with pytest.raises(ValueError, match="unknown fault 'melt'"):
        meter.fault = "melt"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        meter.exception_code = 9


async def test_modbus_fleet_fixture(modbus_fleet: SimFleet) -> None:
    assert modbus_fleet.running and modbus_fleet.port > 0
    assert [m.meter_id for m in modbus_fleet.meters.values()] == ["M-0001", "M-0002", "M-0003"]
    assert modbus_fleet.unit_of("M-0002") == 2


async def test_speedup_makes_consumption_move(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, speedup=3600.0, update_interval=0.02, start=START)
    before = fleet.meters[1].energy_import
    words = fleet.words(1, 4, 0, 2)
    await asyncio.sleep(0.3)  # about five simulated minutes
    assert fleet.meters[1].energy_import > before
    assert fleet.words(1, 4, 0, 2) != words
    assert fleet.sim_now() > START + timedelta(minutes=4)


def f32_at(image: dict[tuple[int, int], list[int]], address: int) -> float:
    return float(struct.unpack(">f", wire(image[(4, address)]))[0])


def test_rollover_wraps_the_cumulative_registers_at_the_modulus() -> None:
    generic = profile("generic")
    meter = SimMeter("M-1", seed=1, start=START, energy_import=500.0)
    meter.fault = "rollover"
    top = f32_at(meter.encode(generic), 0)
    assert top == pytest.approx(1e8, rel=1e-7)  # just below the 1e8 kWh modulus (float32 rounds it)
    meter.tick(START + timedelta(hours=2))
    wrapped = f32_at(meter.encode(generic), 0)
    assert 0 < wrapped < 5  # consumption carried it past the modulus
    meter.fault = None
    assert f32_at(meter.encode(generic), 0) == pytest.approx(wrapped)  # a wrapped meter stays wrapped


def test_spike_stuck_tamper_and_garbage_faults() -> None:
    generic = profile("generic")
    meter = SimMeter("M-1", seed=1, start=START, energy_import=500.0)
    power = meter.value(Channel.POWER)
    meter.fault = "spike"
    assert meter.value(Channel.ENERGY_IMPORT) == pytest.approx(500.0 + meter.spike_kwh)
    assert meter.value(Channel.POWER) == pytest.approx(power * meter.spike_factor)
    meter.fault = "stuck"
    frozen = meter.encode(generic)
    meter.tick(START + timedelta(hours=1))
    assert meter.encode(generic) == frozen
    meter.fault = "tamper"
    assert meter.encode(generic)[(4, 14)] == [0b1]
    meter.fault = None
    assert meter.encode(generic)[(4, 14)] == [0] and meter.encode(generic) != frozen
    meter.garbage_word = 0x7F7F
    meter.fault = "garbage"
    assert f32_at(meter.encode(generic), 6) > 1e38  # an impossible voltage, yet a finite number


async def test_fleet_refuses_faults_the_profile_cannot_show(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet("sdm630", n=1, update_interval=None)
    with pytest.raises(ValueError, match="profile sdm630 has no tamper status bit"):
        fleet.set_fault("M-0001", "tamper")
    with pytest.raises(ValueError, match="no cumulative register with a modulus"):
        fleet.set_fault("M-0001", "rollover")
    with pytest.raises(ValueError, match="no fault parameter 'colour'"):
        fleet.set_fault("M-0001", "slow", colour=1.0)
    fleet.set_fault("M-0001", "slow", delay=0.25)
    assert fleet.meter("M-0001").delay == 0.25 and fleet.meter("M-0001").fault == "slow"


async def test_network_spreads_meters_over_endpoints_one_server_each() -> None:
    from drivers.modbus import ModbusConnection, ModbusEndpoint
    from gateway.model.profiles import Function
    from simulators.modbus import SimNetwork

    async with SimNetwork(profile("sdm630"), 7, endpoints=3, seed=4, update_interval=None) as net:
        assert [len(f.meters) for f in net.fleets] == [3, 3, 1]
        assert len({f.port for f in net.fleets}) == 3
        fleet, unit = net.locate("M-0005")
        assert (fleet is net.fleets[1], unit) == (True, 2)
        ep = ModbusEndpoint("e2", "127.0.0.1", fleet.port)
        async with ModbusConnection(ep) as conn:
            words = await conn.read(unit, Function.INPUT, 0x48, 2)  # SDM630 30073 import kWh
        assert struct.unpack(">f", wire(list(words)))[0] == pytest.approx(net.meter("M-0005").energy_import, rel=1e-6)
    with pytest.raises(ValueError, match=r"1\.\.247 meters per endpoint"):
        SimNetwork(profile("generic"), 500, endpoints=2)


async def test_simulate_modbus_command_serves_meters_over_several_ports() -> None:
    """`meter-gateway simulate modbus` as a person runs it: a real process, real ports."""
    import os
    import re
    import signal
    import sys

    from drivers.modbus import ModbusConnection, ModbusEndpoint
    from gateway.errors import ModbusExceptionResponse
    from gateway.model.profiles import Function

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "modbus", "--meters", "5", "--endpoints", "2",
        "--profile", "sdm630", "--port", "0", "--fault", "M-0004=exception",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not lines or lines[-1] != "ready; Ctrl-C stops":
                line = (await proc.stdout.readline()).decode()
                assert line, f"simulator ended early: {lines}"
                lines.append(line.strip())
        ports = [int(p) for p in re.findall(r"endpoint sim-\d 127\.0\.0\.1:(\d+) units", "\n".join(lines))]
        assert len(ports) == 2 and "meters M-0004..M-0005" in lines[2]
        async with ModbusConnection(ModbusEndpoint("a", "127.0.0.1", ports[0])) as conn:
            assert len(await conn.read(3, Function.INPUT, 0, 12)) == 12
        async with ModbusConnection(ModbusEndpoint("b", "127.0.0.1", ports[1], retries=0)) as conn:
            with pytest.raises(ModbusExceptionResponse):
                await conn.read(1, Function.INPUT, 0, 12)  # M-0004, faulted
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=30)
        assert proc.stderr is not None
        await proc.stderr.read()


def test_meters_serve_their_models_register_table_not_the_profiles_registers() -> None:
    """A profile that puts total power one register off does not move the simulated SDM630's power:
    the meter serves Eastron's table (30053 = 0x0034), so the profile's read at 0x0036 finds a hole."""
    import dataclasses

    sdm630 = profile("sdm630")
    wrong = dataclasses.replace(sdm630, registers=tuple(
        dataclasses.replace(r, address=0x0036) if r.channel is Channel.POWER else r for r in sdm630.registers))
    fleet = SimFleet(wrong, 1, update_interval=None, start=START)
    meter = fleet.meters[1]
    for image in (meter.encode(wrong), {(4, 0x34): fleet.words(1, 4, 0x34, 2), (4, 0x36): fleet.words(1, 4, 0x36, 2)}):
        assert struct.unpack(">f", wire(image[(4, 0x34)]))[0] == pytest.approx(meter.power * 1000, rel=1e-6)
        assert image.get((4, 0x36), [0, 0]) == [0, 0]
    assert fleet.datasheet.transcribed and fleet.datasheet.register("power").address == 0x34
