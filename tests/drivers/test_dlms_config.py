"""DLMS configuration: [dlms] endpoints and `protocol = "dlms"` meters validated with errors naming
the key and its line; secrets from a key file only the service user can read, or the environment,
never in a repr; the shipped object maps; a register's decimals kept exactly through the normaliser."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.dlms.secrets import CounterFile, SecretError, env_name, load_key_file, security_for
from drivers.dlms.spec import object_maps
from gateway.errors import ConfigError
from gateway.model import Channel, Protocol, Source
from gateway.model.samples import RawObjects
from gateway.normalise.objects import ObjectReader
from gateway.runtime.config import parse_config
from gateway.runtime.gateway import meters_from_config

CONFIG = """\
[dlms]
default_interval = 900

[[dlms.endpoints]]
name = "sub-7"
host = "10.0.7.20"

[[dlms.endpoints]]
name = "probe"
transport = "hdlc_serial"
device = "/dev/ttyUSB1"
baudrate = 9600

[[meters]]
meter_id = "E-1"
protocol = "dlms"
endpoint = "sub-7"
server_logical = 1

[[meters]]
meter_id = "E-2"
protocol = "dlms"
endpoint = "probe"
client_sap = 16
server_logical = 1
server_physical = 17
object_map = "landis_gyr_e450"
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env=env or {})
    return [str(p) for p in info.value.problems]


def test_dlms_meters_are_configured_and_registered() -> None:
    cfg, _ = parse_config(CONFIG, "t.toml", env={})
    assert [(m.protocol, m.address, m.model) for m in meters_from_config(cfg)] == [
        (Protocol.DLMS, "10.0.7.20:4059/1", "dlms_generic"), (Protocol.DLMS, "/dev/ttyUSB1/1", "landis_gyr_e450")]


@pytest.mark.parametrize(("change", "expected"), [
    (('device = "/dev/ttyUSB1"\n', ""), "dlms.endpoints[1].device at line 8: transport 'hdlc_serial' needs device"),
    (('host = "10.0.7.20"', ""), "dlms.endpoints[0].host at line 4: transport 'wrapper' needs host"),
    (('endpoint = "sub-7"', 'endpoint = "sub-9"'), "meters[0].endpoint at line 17: unknown endpoint 'sub-9'"),
    (('object_map = "landis_gyr_e450"', 'object_map = "nope"'), "meters[1].object_map at line 27: unknown object map 'nope'"),
    (('server_logical = 1\n\n[[meters]]', 'server_logical = 1\nauthentication = "medium"\n\n[[meters]]'),
     "meters[0].authentication at line 19: Input should be 'lowest', 'low' or 'hls_gmac'"),
    (('server_logical = 1\n\n[[meters]]', 'server_logical = 1\nauthentication = "low"\n\n[[meters]]'),
     "meters[0].authentication at line 19: meter E-1: password is missing (key file or DLMS_E_1_PASSWORD)"),
    (('server_physical = 17', 'server_physical = 17\nclasses = { "1-0:1.8" = 3 }'),
     "meters[1].classes at line 27: '1-0:1.8' is not an OBIS code"),
    (('transport = "hdlc_serial"', 'transport = "modbus"'), "dlms.endpoints[1].transport at line 10: Input should be"),
    (('host = "10.0.7.20"', 'transport = "hdlc_serial"\ndevice = "/dev/ttyUSB1"'),
     "dlms.endpoints[1].device at line 12: serial line /dev/ttyUSB1 is already dlms.endpoints[0]"),
])
def test_dlms_config_mistakes_name_the_key_and_line(change: tuple[str, str], expected: str) -> None:
    text = CONFIG.replace(*change)
    assert text != CONFIG
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "dlms-keys.toml"
    keys.write_text('[meters."E-1"]\npassword = "s3cret-pw"\n')
    keys.chmod(0o644)
    text = CONFIG.replace("default_interval = 900", f'default_interval = 900\nkey_file = "{keys}"').replace(
        'server_logical = 1\n\n[[meters]]', 'server_logical = 1\nauthentication = "low"\n\n[[meters]]')
    [found] = problems(text)
    assert found.startswith("dlms.key_file at line 3: ") and "accessible by group or others (mode 0644)" in found
    assert "chmod 600" in found
    assert "s3cret-pw" not in found
    keys.chmod(0o600)
    cfg, _ = parse_config(text, "t.toml", env={})
    assert cfg.meters[0].meter_id == "E-1"


def test_secrets_come_from_the_file_or_the_environment_and_never_show(tmp_path: Path) -> None:
    keys = tmp_path / "k.toml"
    keys.write_text('[meters."E-1"]\nauthentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"\n'
                    'encryption_key = "000102030405060708090A0B0C0D0E0F"\n')
    os.chmod(keys, 0o600)
    file = load_key_file(keys)
    sec = security_for("E-1", "hls_gmac", None, b"MGW00001", file, {})
    assert sec.ciphered and sec.encryption_key == bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    assert "0001020304" not in repr(sec) and "D0D1" not in repr(sec)
    env = {env_name("E-1", "encryption_key"): "0F" * 16}
    assert security_for("E-1", "hls_gmac", None, b"MGW00001", file, env).encryption_key == b"\x0f" * 16
    with pytest.raises(SecretError, match="must be 16 bytes") as info:
        security_for("E-1", "hls_gmac", None, b"MGW00001", file, {env_name("E-1", "encryption_key"): "abcd"})
    assert "abcd" not in str(info.value)
    assert security_for("E-2", "lowest", None, b"MGW00001", file, {}).ciphered is False


def test_the_invocation_counter_is_kept_in_a_file(tmp_path: Path) -> None:
    counter = CounterFile(tmp_path / "dlms" / "E-1.invocation")
    assert counter.load() == 0
    counter.save(4711)
    assert CounterFile(tmp_path / "dlms" / "E-1.invocation").load() == 4711
    assert (counter.path.stat().st_mode & 0o077) == 0


def test_shipped_object_maps() -> None:
    maps = object_maps()
    generic = maps["dlms_generic"]
    wanted = {"1-0:1.8.0": Channel.ENERGY_IMPORT, "1-0:2.8.0": Channel.ENERGY_EXPORT, "1-0:1.8.3": Channel.ENERGY_IMPORT_T3,
              "1-0:2.8.4": Channel.ENERGY_EXPORT_T4, "1-0:72.7.0": Channel.VOLTAGE_L3, "1-0:51.7.0": Channel.CURRENT_L2,
              "1-0:1.7.0": Channel.POWER, "1-0:14.7.0": Channel.FREQUENCY, "1-0:13.7.0": Channel.POWER_FACTOR,
              "8-0:1.0.0": Channel.VOLUME, "7-0:3.0.0": Channel.VOLUME}
    assert {c: s.channel for c in wanted if (s := generic.get(c)) is not None} == wanted
    assert {"landis_gyr_e450", "sagemcom_t210d"} <= set(maps)


T = datetime(2026, 12, 7, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(("value", "unit", "channel", "expected"), [
    (Decimal("12345678").scaleb(-3), "kWh", Channel.ENERGY_IMPORT, "12345.678"),
    (Decimal("12345678"), "Wh", Channel.ENERGY_IMPORT, "12345.678"),   # Wh -> kWh without float noise
    (Decimal("2301").scaleb(-1), "V", Channel.VOLTAGE_L1, "230.1"),
    (Decimal("4321"), "W", Channel.POWER, "4.321"),
    (Decimal("1005"), "W", Channel.POWER, "1.005"),                      # float: 1.0050000000000001
    (Decimal("10153").scaleb(-1), "Wh", Channel.ENERGY_IMPORT, "1.0153"),  # float: 1.0152999999999999
    (Decimal("2675"), "Wh", Channel.ENERGY_IMPORT, "2.675"),             # float: 2.6750000000000003
    (Decimal("123456789").scaleb(-3), "m3", Channel.VOLUME, "123456.789"),
])
def test_register_decimals_survive_the_normaliser(value: Decimal, unit: str, channel: Channel, expected: str) -> None:
    code = {Channel.ENERGY_IMPORT: "1-0:1.8.0", Channel.VOLTAGE_L1: "1-0:32.7.0", Channel.POWER: "1-0:1.7.0",
            Channel.VOLUME: "8-0:1.0.0"}[channel]
    batch = ObjectReader(object_maps()["dlms_generic"], Source.DLMS).read(
        RawObjects("E-1", T, T, ((code, value, unit),), b"\xc4\x01"))
    [reading] = batch.readings
    assert (reading.channel, repr(reading.value)) == (channel, expected)
    assert reading.source is Source.DLMS


def test_a_value_of_the_wrong_type_is_a_dead_letter_with_the_apdu_in_hex() -> None:
    apdu = bytes.fromhex("c401c1000a03414243")  # GET response: visible-string "ABC" for an energy register
    batch = ObjectReader(object_maps()["dlms_generic"], Source.DLMS).read(
        RawObjects("E-1", T, T, (("1-0:1.8.0", "ABC", "Wh"), ("1-0:32.7.0", Decimal("230.1"), "V")), apdu))
    [dead] = batch.deadletters
    assert (dead.meter_id, dead.reason, dead.payload, dead.source) == ("E-1", "decode", "c401c1000a03414243", "dlms")
    assert [r.channel for r in batch.readings] == [Channel.VOLTAGE_L1]
