"""Every shipped profile read against its meter model's register table, which the simulator owns.

The simulated meter encodes what it holds with the register table transcribed from the
manufacturer's document (simulators/modbus/datasheets/, not gateway/profiles/); the product's
decoders (Normaliser and FrameDecoder) read that image with the product's profile. A profile with a
wrong address, word order, type, scale or unit decodes another number than the meter holds, and
the test names the register and what the table says about it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.modbus import plan_reads
from drivers.samples import RawRegisters, RegisterBlock
from gateway.config.profiles import load_profiles
from gateway.model import Channel, Quality
from gateway.model.profiles import DeviceProfile
from gateway.normalise.frame import FrameDecoder, SeriesTable
from gateway.normalise.normaliser import Normaliser
from gateway.normalise.units import conversion_factor
from simulators.modbus.datasheet import UNITS, SheetRegister, datasheets, parse_datasheet
from simulators.modbus.meter import SimMeter

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHIPPED = load_profiles()
#: What the meter holds while it reads: importing, and exporting (negative power, so a signed
#: register read as unsigned, or the other way round, shows).
STATES = {
    "importing": {"power": 1.85, "voltage": 231.4, "frequency": 50.03, "power_factor": 0.93},
    "exporting": {"power": -2.75, "voltage": 228.6, "frequency": 49.97, "power_factor": 0.97},
}


#: Meters that count one way: their only counter is the total of both directions, which the profile
#: stores as import (what it is for a consumer's meter), and their power register is unsigned. Such a
#: meter sees no export: it holds none, and shows the magnitude of its power. Profile channel ->
#: the quantity of the meter's table it reads.
ONE_WAY: dict[str, dict[str, str]] = {"orno_we514": {"energy_import": "energy_total"}}


def quantity_of(name: str, channel: Channel) -> str:
    """The quantity of the model's table that profile `name` reads as `channel`."""
    return ONE_WAY.get(name, {}).get(channel.value, channel.value)


def meter_holding(state: str, *, fault: str | None = None, one_way: bool = False) -> SimMeter:
    meter = SimMeter("M-1", seed=5, start=T0, energy_import=12345.67)
    meter.energy_export = 0.0 if one_way else 321.09  # not 0: a profile reading a hole or another counter must not pass
    meter.heat_energy, meter.volume, meter.flow = 8765.43, 1234.567, 1.25  # a heat meter's, likewise
    for name, value in STATES[state].items():
        setattr(meter, name, abs(value) if one_way else value)
    meter.fault = fault  # type: ignore[assignment]
    return meter


def poll_of(profile: DeviceProfile, image: dict[tuple[int, int], list[int]]) -> RawRegisters:
    """What a poller reading `profile`'s blocks gets from a meter serving `image` (holes read 0)."""
    words = {(fc, address + k): w for (fc, address), ws in image.items() for k, w in enumerate(ws)}
    blocks = tuple(
        RegisterBlock(b.function.code, b.address, tuple(words.get((b.function.code, a), 0) for a in range(b.address, b.end)))
        for b in plan_reads(profile)
    )
    return RawRegisters("M-1", T0, T0, blocks, 0.01)


def both_decoders(profile: DeviceProfile, raw: RawRegisters) -> dict[str, dict[Channel, tuple[float, Quality]]]:
    """The readings of one poll through the per-poll Normaliser and the columnar FrameDecoder."""
    batch = Normaliser({"M-1": profile}, {}).registers(raw)
    assert not batch.deadletters, [d.detail for d in batch.deadletters]
    table = SeriesTable()
    frame, dead, _events = FrameDecoder({"M-1": profile}, table).decode([raw])
    assert not dead, [d.detail for d in dead]
    return {
        "Normaliser": {r.channel: (r.value, r.quality) for r in batch.readings},
        "FrameDecoder": {r.channel: (r.value, r.quality) for r in frame.to_readings(table)},
    }


def describe(reg: SheetRegister) -> str:
    fc = {3: "holding", 4: "input"}[reg.function_code]
    order = "LSW first" if reg.low_word_first else "MSW first"
    unit = reg.unit or "(no unit)"
    scale = f"in {unit}" if reg.format.is_float else f"resolution {reg.resolution:g} {unit}"
    return f"{reg.parameter!r} at {fc} {reg.address:#06x}, {reg.format.value} {order}, {scale}"


def tolerance(reg: SheetRegister, expected: float) -> float:
    """What the table's encoding loses: one count of an integer register, float32 rounding."""
    per_count = reg.resolution * (UNITS[reg.unit][1] if reg.unit else 1.0)
    return max(abs(expected) * 2e-7, per_count * 0.51 if not reg.format.is_float else 0.0, 1e-9)


def test_every_shipped_profile_has_a_transcribed_register_table() -> None:
    sheets = datasheets()
    assert set(SHIPPED) == set(sheets), "a shipped profile needs simulators/modbus/datasheets/<name>.toml"
    for name, sheet in sheets.items():
        assert sheet.transcribed and sheet.document and sheet.registers, name


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_profile_decodes_what_the_meter_holds_from_its_datasheet_image(name: str, state: str) -> None:
    profile, sheet = SHIPPED[name], datasheets()[name]
    meter = meter_holding(state, one_way=name in ONE_WAY)
    got = both_decoders(profile, poll_of(profile, meter.encode(sheet)))
    wrong = []
    for spec in profile.registers:
        expected = meter.quantity(quantity_of(name, spec.channel))
        try:
            reg = sheet.register(quantity_of(name, spec.channel))
        except KeyError:
            wrong.append(f"{spec.channel.value}: the meter's register table has no such quantity")
            continue
        for decoder, readings in got.items():
            value = readings.get(spec.channel, (None, None))[0]
            if value is None or abs(value - expected) > tolerance(reg, expected):
                wrong.append(f"{decoder} {spec.channel.value}: profile reads {spec.type.value} {spec.order.value} "
                             f"scale {spec.scale:g} {spec.unit!r} at {spec.function.value} {spec.address:#06x} "
                             f"and gets {value}; the meter holds {expected:.6g}, the table says {describe(reg)}")
    assert not wrong, f"profile {name} disagrees with {sheet.document}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_profile_tamper_bits_are_the_datasheets(name: str) -> None:
    profile, sheet = SHIPPED[name], datasheets()[name]
    flags = {(f.flag.value, f.function.code, f.address, f.bit, f.active) for f in profile.flags}
    bits = {(s.condition, s.function_code, s.address, s.bit, s.active) for s in sheet.status}
    assert flags == bits
    for fault, quality in ((None, Quality.NONE), ("tamper", Quality.TAMPER if bits else Quality.NONE)):
        image = meter_holding("importing", fault=fault).encode(sheet)
        for decoder, readings in both_decoders(profile, poll_of(profile, image)).items():
            assert {q for _, q in readings.values()} == {quality}, (decoder, fault)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_profile_counters_wrap_where_the_datasheet_says(name: str) -> None:
    profile, sheet = SHIPPED[name], datasheets()[name]
    for spec in profile.registers:
        if spec.channel not in (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT):
            continue
        reg = sheet.register(quantity_of(name, spec.channel))
        in_profile = spec.modulus * conversion_factor(spec.unit, spec.channel) if spec.modulus else None
        in_sheet = reg.wraps_at * UNITS[reg.unit][1] if reg.wraps_at else None
        assert in_profile == (pytest.approx(in_sheet) if in_sheet else None), (name, spec.channel.value)


def test_parse_errors_name_the_file_and_the_entry() -> None:
    head = '[device]\nmodel = "m"\nmanufacturer = "x"\ndocument = "d"\nformat = "float32"\n'
    with pytest.raises(ValueError, match=r"m\.toml register\[0\]: unknown quantity 'volts'"):
        parse_datasheet(head + '[[register]]\nnumber = 0\nquantity = "volts"\n', "m.toml")
    with pytest.raises(ValueError, match=r"register\[0\]: unit 'kWh' does not measure voltage_l1"):
        parse_datasheet(head + '[[register]]\nnumber = 0\nquantity = "voltage_l1"\nunit = "kWh"\n', "m.toml")
    with pytest.raises(ValueError, match=r"voltage_l2 at 0x0001 overlaps voltage_l1"):
        parse_datasheet(head + '[[register]]\nnumber = 0\nquantity = "voltage_l1"\n'
                        '[[register]]\nnumber = 1\nquantity = "voltage_l2"\n', "m.toml")
    with pytest.raises(ValueError, match=r"register\[0\]: register 30000 \(wire address -1\)"):
        parse_datasheet(head.replace("[device]\n", "[device]\nnumbering = 30001\n")
                        + '[[register]]\nnumber = 30000\nquantity = "voltage_l1"\n', "m.toml")
