"""The [vee] section: documented defaults, layered overrides per utility and channel, errors
with key and line, and the Validator the gateway builds from it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gateway.config.vee import VeeSection, VeeThresholds
from gateway.errors import ConfigError
from gateway.model import Channel, Utility
from gateway.runtime.config import parse_config
from gateway.runtime.plan import build_validator as _validator
from gateway.validate.thresholds import THRESHOLD_FIELDS, Thresholds, ThresholdTable, builtin

BASE = """\
[[modbus.endpoints]]
name = "gw1"
host = "127.0.0.1"

[[meters]]
meter_id = "M-1"
endpoint = "gw1"
unit = 1
interval = 900

[[meters]]
meter_id = "W-1"
utility = "water"
endpoint = "gw1"
unit = 2
"""


def test_schema_and_thresholds_name_the_same_keys() -> None:
    assert set(VeeThresholds.model_fields) == THRESHOLD_FIELDS
    assert {f.name for f in dataclasses.fields(Thresholds)} == THRESHOLD_FIELDS


@pytest.mark.parametrize(("utility", "channel", "field", "value"), [
    (Utility.ELECTRICITY, Channel.ENERGY_IMPORT, "zero_consumption_hours", 24.0),
    (Utility.WATER, Channel.VOLUME, "zero_consumption_hours", 72.0),
    (Utility.GAS, Channel.VOLUME, "spike_peak_factor", 4.0),
    (Utility.ELECTRICITY, Channel.ENERGY_EXPORT, "zero_consumption_hours", None),
    (Utility.ELECTRICITY, Channel.FREQUENCY, "low", 45.0),
    (Utility.ELECTRICITY, Channel.POWER_FACTOR, "high", 1.0),
    (Utility.ELECTRICITY, Channel.ENERGY_IMPORT, "spike_k", 6.0),
    (Utility.ELECTRICITY, Channel.ENERGY_IMPORT, "inspection_regressions", 3),
])
def test_documented_defaults(utility: Utility, channel: Channel, field: str, value: object) -> None:
    assert getattr(builtin(utility, channel), field) == value


def test_voltage_limits_follow_nominal_voltage_unless_set() -> None:
    table = ThresholdTable()
    assert (table.resolve(Utility.ELECTRICITY, Channel.VOLTAGE_L2).low, table.resolve(
        Utility.ELECTRICITY, Channel.VOLTAGE_L2).high) == pytest.approx((184.0, 276.0))
    us = ThresholdTable(fleet={"nominal_voltage": 120.0})
    assert us.resolve(Utility.ELECTRICITY, Channel.VOLTAGE_L1).high == pytest.approx(144.0)
    fixed = ThresholdTable(channels={Channel.VOLTAGE_L1: {"low": 100.0}})
    assert fixed.resolve(Utility.ELECTRICITY, Channel.VOLTAGE_L1).low == 100.0


def test_layers_from_general_to_specific() -> None:
    cfg, _ = parse_config(BASE + """
[vee]
spike_k = 8.0
zero_consumption_hours = 48

[vee.utilities.water]
zero_consumption_hours = 96
spike_k = 9.0

[vee.channels.volume]
spike_k = 10.0

[vee.utilities.water.channels.volume]
resolution = 0.0001
""", "t.toml", env={})
    table = ThresholdTable.from_config(cfg.vee.thresholds_doc())
    elec = table.resolve(Utility.ELECTRICITY, Channel.ENERGY_IMPORT)
    water = table.resolve(Utility.WATER, Channel.VOLUME)
    assert (elec.spike_k, elec.zero_consumption_hours) == (8.0, 48.0)
    assert (water.spike_k, water.zero_consumption_hours, water.resolution) == (10.0, 96.0, 0.0001)
    assert water.spike_peak_factor == 4.0  # untouched: the water default


def test_unknown_or_bad_keys_are_reported_with_their_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "\n[vee]\nspike_kk = 3\n\n[vee.utilities.water]\nvoltage_band = 2.0\n", "t.toml", env={})
    text = "\n".join(str(p) for p in info.value.problems)
    assert "vee.spike_kk at line 18" in text and "vee.utilities.water.voltage_band at line 21" in text


def test_thresholds_table_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown threshold"):
        ThresholdTable(fleet={"spike": 1})


def test_the_gateway_builds_its_validator_from_the_config() -> None:
    cfg, profiles = parse_config(BASE + "\n[vee]\nestimate_min_interval = 0\nspike_window = 96\n", "t.toml", env={})
    validator = _validator(cfg, profiles)
    settings = validator.settings("M-1", Channel.ENERGY_IMPORT)
    assert settings["modulus"] == 1e8 and settings["interval_us"] == 900_000_000 and settings["estimate"]
    assert validator.settings("M-1", Channel.POWER)["low"] == -math.inf  # the generic profile measures export
    water = validator.settings("W-1", Channel.ENERGY_IMPORT)
    assert water["zero_us"] == 72 * 3_600_000_000 and water["interval_us"] == 60_000_000
    assert VeeSection().seed_hours == 48.0 and VeeSection().spike_window == 672
