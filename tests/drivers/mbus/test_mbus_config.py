"""The [mbus] section and M-Bus meters in a configuration: what loads, and mistakes named by key
and line; exact unit conversion of the decoder's Decimals in the normaliser's object path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from drivers.mbus.maps import object_maps
from drivers.registry import DRIVERS
from gateway.errors import ConfigError
from gateway.model import Source
from gateway.model.samples import RawObjects
from gateway.normalise.objects import ObjectReader
from gateway.runtime.config import parse_config

CONFIG = """\
[mbus]
default_interval = 900

[[mbus.buses]]
name = "heat-1"
serial_port = "/dev/ttyUSB0"

[[mbus.buses]]
name = "cellar"
host = "10.0.0.9"

[[meters]]
meter_id = "W-1"
protocol = "mbus"
utility = "water"
bus = "cellar"
primary_address = 5

[[meters]]
meter_id = "H-1"
protocol = "mbus"
bus = "heat-1"
secondary_address = "87654321"
mbus_map = "mbus_heat"
interval = 60
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    return [str(p) for p in info.value.problems]


def test_buses_and_meters_load() -> None:
    config, _ = parse_config(CONFIG, "t.toml", env={})
    section = config.mbus
    assert [b.kind for b in section.buses] == ["serial", "tcp"]
    assert section.buses[0].baudrate == 2400 and section.buses[0].parity == "E"
    assert "mbus" in DRIVERS


@pytest.mark.parametrize(("change", "expected"), [
    (('bus = "cellar"', 'bus = "attic"'), "meters[0].bus"),
    (("primary_address = 5", "primary_address = 251"), "primary_address"),
    (("primary_address = 5", 'secondary_address = "12X"'), "meters[0].secondary_address"),
    (('mbus_map = "mbus_heat"', 'mbus_map = "nope"'), "meters[1].mbus_map"),
    (('host = "10.0.0.9"', 'hots = "10.0.0.9"'), "hots"),
    (('serial_port = "/dev/ttyUSB0"', 'serial_port = "/dev/ttyUSB0"\nparity = "X"'), "parity"),
    (('host = "10.0.0.9"', 'serial_port = "/dev/ttyUSB0"'), "mbus.buses[1].serial_port"),
    (("default_interval = 900", 'default_interval = 900\nmeter_timezone = "Mars/Olympus"'), "mbus.meter_timezone"),
])
def test_mistakes_name_the_key(change: tuple[str, str], expected: str) -> None:
    found = problems(CONFIG.replace(*change))
    assert any(expected in p for p in found), found


def test_both_or_no_address_is_a_mistake() -> None:
    found = problems(CONFIG.replace("primary_address = 5", 'primary_address = 5\nsecondary_address = "1"'))
    assert any("one of primary_address" in p for p in found), found


def test_decimals_convert_exactly_to_the_channel_unit() -> None:
    """12345.6 Wh is 12.3456 kWh, not 12.345600000000001 (the float product the old path gave)."""
    reader = ObjectReader(object_maps()["mbus_heat"], Source.MBUS)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    batch = reader.read(RawObjects("H", now, now, (("energy", Decimal("12345.6"), "Wh"),
                                                   ("power", Decimal("70.3"), "W"))))
    assert [repr(r.value) for r in batch.readings] == ["12.3456", "0.0703"]
