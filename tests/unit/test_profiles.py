"""Device profiles: the shipped register maps decode the manufacturers' published encodings,
user profiles are found in configured folders, and every mistake names file, key and line."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivers.modbus import plan_reads
from drivers.samples import RawRegisters, RegisterBlock
from gateway.cli import app
from gateway.config.profiles import load_profiles, parse_profile
from gateway.errors import ConfigError
from gateway.model import Channel, EventKind, Quality
from gateway.model.profiles import DeviceFlag, Function
from gateway.normalise.normaliser import Normaliser
from gateway.runtime.config import parse_config

TS = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
SHIPPED = {"generic", "sdm120", "sdm630", "abb_b23", "em24"}


def f32(x: float) -> tuple[int, ...]:
    """IEEE-754 float32, high word first, as Eastron documents it."""
    return struct.unpack(">HH", struct.pack(">f", x))


def u64(x: int) -> tuple[int, ...]:
    return struct.unpack(">HHHH", struct.pack(">Q", x))


def be32(x: int) -> tuple[int, ...]:
    return struct.unpack(">HH", struct.pack(">i", x))


def le_words32(x: int) -> tuple[int, ...]:
    """Carlo Gavazzi INT32: least significant word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">i", x))
    return lo, hi


def i16(x: int) -> tuple[int, ...]:
    return struct.unpack(">H", struct.pack(">h", x))


# (profile, channel, function, wire address, words as the manual describes them, canonical value)
PUBLISHED = [
    ("sdm120", Channel.VOLTAGE_L1, Function.INPUT, 0x0000, f32(230.1), 230.1),  # 30001 volts
    ("sdm120", Channel.CURRENT_L1, Function.INPUT, 0x0006, f32(5.25), 5.25),  # 30007 amps
    ("sdm120", Channel.POWER, Function.INPUT, 0x000C, f32(1234.5), 1.2345),  # 30013 watts -> kW
    ("sdm120", Channel.POWER_FACTOR, Function.INPUT, 0x001E, f32(0.97), 0.97),  # 30031
    ("sdm120", Channel.FREQUENCY, Function.INPUT, 0x0046, f32(50.02), 50.02),  # 30071 Hz
    ("sdm120", Channel.ENERGY_IMPORT, Function.INPUT, 0x0048, f32(12345.6), 12345.6),  # 30073 kWh
    ("sdm120", Channel.ENERGY_EXPORT, Function.INPUT, 0x004A, f32(12.5), 12.5),  # 30075 kWh
    ("sdm630", Channel.VOLTAGE_L3, Function.INPUT, 0x0004, f32(229.4), 229.4),  # 30005
    ("sdm630", Channel.CURRENT_L2, Function.INPUT, 0x0008, f32(16.0), 16.0),  # 30009
    ("sdm630", Channel.POWER, Function.INPUT, 0x0034, f32(-4200.0), -4.2),  # 30053 total system power, W
    ("sdm630", Channel.POWER_FACTOR, Function.INPUT, 0x003E, f32(-0.5), -0.5),  # 30063
    ("sdm630", Channel.ENERGY_IMPORT, Function.INPUT, 0x0048, f32(98765.4), 98765.4),  # 30073
    ("sdm630", Channel.ENERGY_EXPORT, Function.INPUT, 0x004A, f32(321.0), 321.0),  # 30075
    ("abb_b23", Channel.ENERGY_IMPORT, Function.HOLDING, 0x5000, u64(123456789), 1234567.89),  # 0.01 kWh
    ("abb_b23", Channel.VOLTAGE_L1, Function.HOLDING, 0x5B00, (0, 2301), 230.1),  # 0.1 V
    ("abb_b23", Channel.CURRENT_L3, Function.HOLDING, 0x5B10, (0, 1234), 12.34),  # 0.01 A
    ("abb_b23", Channel.POWER, Function.HOLDING, 0x5B14, be32(-150000), -1.5),  # 0.01 W, signed
    ("abb_b23", Channel.FREQUENCY, Function.HOLDING, 0x5B2C, (5001,), 50.01),  # 0.01 Hz
    ("abb_b23", Channel.POWER_FACTOR, Function.HOLDING, 0x5B3A, i16(-950), -0.95),  # 0.001
    ("em24", Channel.VOLTAGE_L1, Function.INPUT, 0x0000, le_words32(2301), 230.1),  # 0.1 V, LSW first
    ("em24", Channel.CURRENT_L1, Function.INPUT, 0x000C, le_words32(12345), 12.345),  # 0.001 A
    ("em24", Channel.POWER, Function.INPUT, 0x0028, le_words32(70000), 7.0),  # 0.1 W -> kW
    ("em24", Channel.POWER_FACTOR, Function.INPUT, 0x0035, (998,), 0.998),  # 0.001
    ("em24", Channel.FREQUENCY, Function.INPUT, 0x0037, (500,), 50.0),  # 0.1 Hz
    ("em24", Channel.ENERGY_IMPORT, Function.INPUT, 0x003E, le_words32(1234567), 123456.7),  # kWh (+) TOT, 0.1 kWh
    ("em24", Channel.ENERGY_EXPORT, Function.INPUT, 0x005C, le_words32(15), 1.5),
    ("generic", Channel.ENERGY_IMPORT, Function.INPUT, 0, f32(4321.5), 4321.5),
]


def test_shipped_profiles_name_their_documents_and_plan() -> None:
    profiles = load_profiles()
    assert set(profiles) >= SHIPPED
    for name in SHIPPED:
        p = profiles[name]
        assert p.document and p.manufacturer and p.registers
        assert plan_reads(p)  # every register fits the device's request limit
    assert profiles["sdm630"].max_registers_per_request == 80  # Eastron: 40 parameters per request
    assert profiles["generic"].flags[0].flag is DeviceFlag.TAMPER


@pytest.mark.parametrize(("name", "channel", "function", "address", "words", "expected"), PUBLISHED,
                         ids=[f"{p[0]}-{p[1].value}" for p in PUBLISHED])
def test_profile_decodes_the_published_encoding(
    name: str, channel: Channel, function: Function, address: int, words: tuple[int, ...], expected: float
) -> None:
    profile = load_profiles()[name]
    spec = next(r for r in profile.registers if r.channel is channel)
    assert (spec.function, spec.address) == (function, address)
    raw = RawRegisters("M-1", TS, TS, (RegisterBlock(function.code, address, words),), 0.01)
    batch = Normaliser({"M-1": profile}, {}).registers(raw)
    got = {r.channel: r.value for r in batch.readings}
    assert got[channel] == pytest.approx(expected, rel=1e-6)


def test_not_available_marker_is_a_dead_letter_not_a_reading() -> None:
    profile = load_profiles()["abb_b23"]
    raw = RawRegisters("M-1", TS, TS, (RegisterBlock(3, 0x5B00, (0xFFFF, 0xFFFF)),), 0.01)
    batch = Normaliser({"M-1": profile}, {}).registers(raw)
    assert Channel.VOLTAGE_L1 not in {r.channel for r in batch.readings}
    dead = [d for d in batch.deadletters if d.reason == "not_available"]
    assert len(dead) == 1 and "voltage_l1 at holding 0x5b00" in dead[0].detail


def test_tamper_bit_flags_every_reading_of_the_poll_and_raises_one_event() -> None:
    profile = load_profiles()["generic"]
    normaliser = Normaliser({"M-1": profile}, {})

    def poll(status: int) -> tuple[set[Quality], list[EventKind]]:
        words = (*f32(100.0), *f32(0.0), *f32(1.0), *f32(230.0), *f32(4.0), *f32(50.0), *f32(0.95), status)
        batch = normaliser.registers(RawRegisters("M-1", TS, TS, (RegisterBlock(4, 0, words),), 0.01))
        assert len(batch.readings) == 7
        return {r.quality for r in batch.readings}, [e.kind for e in batch.events]

    assert poll(0b0) == ({Quality.NONE}, [])
    assert poll(0b1) == ({Quality.TAMPER}, [EventKind.TAMPER])
    assert poll(0b101) == ({Quality.TAMPER}, [])  # still tampered: no second event
    assert poll(0b100) == ({Quality.NONE}, [])  # another bit: not ours
    assert poll(0b10) == ({Quality.RELAY_OPEN}, [])  # bit 1: the supply relay is open (issue 24)
    assert poll(0b1) == ({Quality.TAMPER}, [EventKind.TAMPER])  # a new episode


PROFILE = """\
[profile]
name = "site_meter"
manufacturer = "Acme"
model = "X1"
document = "Acme X1 register map v2"

[[registers]]
channel = "energy_import"
address = 0
type = "uint32"
scale = 0.1
unit = "kWh"
kind = "cumulative"
modulus = 1e7

[[flags]]
flag = "tamper"
address = 4
bit = 3
active = false
"""


def test_user_profile_with_an_inverted_flag() -> None:
    p = parse_profile(PROFILE, "site.toml")
    assert p.flags[0].bit == 3 and not p.flags[0].active and p.flags[0].function is Function.INPUT
    assert [(b.address, b.count) for b in plan_reads(p)] == [(0, 5)]


@pytest.mark.parametrize(("change", "expected"), [
    (("bit = 3", "bit = 16"), "flags[0].bit at line 19: Input should be less than or equal to 15 (got 16)"),
    (('flag = "tamper"', 'flag = "smoke"'), "flags[0].flag at line 17: Input should be 'tamper' or 'relay_open' (got 'smoke')"),
    (("[profile]", "[profile]\nmax_registers_per_request = 1"),
     "registers[0].type at line 11: energy_import (uint32) needs 2 registers but max_registers_per_request is 1"),
    (('unit = "kWh"', 'unit = "kWh"\n\n[[registers]]\nchannel = "energy_import"\naddress = 9\ntype = "int16"'),
     "registers[1].channel at line 15: repeats channel energy_import (first at registers[0])"),
    (("unit = \"kWh\"", "unit = \"V\""), "unit 'V' cannot be converted to energy_import"),
    (('unit = "kWh"', 'unit = "kWh"\n\n[[registers]]\nchannel = "voltage_l1"\naddress = 1\ntype = "uint16"\nunit = "V"'),
     "registers[1].address at line 16: voltage_l1 (uint16 at 0x0001) overlaps registers[0] energy_import "
     "(uint32 at 0x0000, input)"),
    (('type = "uint32"', 'type = "uint24"'), "registers[0].type at line 10: Input should be 'int16', 'uint16'"),
    (('unit = "kWh"\n', ''), 'registers[0].unit at line 8: energy_import has no unit: write the unit the device '
                              'sends (e.g. unit = "kWh")'),
])
def test_profile_mistakes_name_key_and_line(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(PROFILE.replace(*change), "site.toml")
    assert any(expected in str(p) for p in info.value.problems), info.value.problems


CONFIG = """\
[modbus]
profile_dirs = ["{folder}"]

[[modbus.endpoints]]
name = "gw1"
host = "127.0.0.1"

[[meters]]
meter_id = "M-1"
endpoint = "gw1"
unit = 1
profile = "site_meter"
"""


def test_a_profile_dropped_in_a_configured_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(PROFILE)
    _, profiles = parse_config(CONFIG.format(folder=tmp_path), "gw.toml", env={})
    assert profiles["site_meter"].document == "Acme X1 register map v2"
    assert set(profiles) >= SHIPPED


def test_config_check_validates_profiles_too(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "site.toml").write_text(PROFILE.replace("bit = 3", "bit = 99"))
    config = tmp_path / "gw.toml"
    config.write_text(CONFIG.format(folder=folder))
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    assert "site.toml: flags[0].bit at line 19: Input should be less than or equal to 15 (got 99)" in (
        result.output.replace("\n", "")
    )
    (folder / "site.toml").write_text(PROFILE + '\n[[registers]]\nchannel = "power"\naddress = 1\ntype = "float32"\n')
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    said = result.output.replace("\n", "")
    assert "site.toml: registers[1].address at line 24: power (float32 at 0x0001) overlaps registers[0]" in said
    assert "site.toml: registers[1].unit at line 23: power has no unit" in said
    (folder / "site.toml").write_text(PROFILE)
    ok = CliRunner().invoke(app, ["config", "check", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "site_meter" in ok.output
