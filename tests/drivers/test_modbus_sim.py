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
