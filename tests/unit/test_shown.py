"""Values as the meter shows them (issue 16, item 1): a float32 register becomes the shortest decimal
that reads back as it (checked against numpy's own shortest repr, Dragon4, over every finite float32
bit pattern hypothesis picks), an integer register with a scale has exactly the scale's decimals,
float64 registers keep their float64, and consumption adds up in decimal."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Channel, Kind, Utility
from gateway.model.profiles import DataType, DeviceProfile, Function, RegisterSpec
from gateway.model.samples import RawRegisters, RegisterBlock
from gateway.model.shown import decimals_of, shortest_float32, shown_sum, shown_value
from gateway.normalise.frame import FrameDecoder, SeriesTable
from gateway.normalise.normaliser import Normaliser

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def f32_words(x: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", x)))


def f64_words(x: float) -> list[int]:
    return list(struct.unpack(">HHHH", struct.pack(">d", x)))


def i32_words(n: int) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", n)))


def decoded(specs: list[RegisterSpec], words: list[int]) -> tuple[dict[str, float], dict[str, float]]:
    """(per-poll path, frame path): channel -> value, for one poll of one meter."""
    profile = DeviceProfile("t", "test", "test", "test map v1", Utility.ELECTRICITY, tuple(specs))
    raw = RawRegisters("M-1", T0, T0 + timedelta(seconds=1), (RegisterBlock(4, 0, tuple(words)),), 0.01)
    per_poll = {r.channel.value: r.value for r in Normaliser({"M-1": profile}, {}).registers(raw).readings}
    table = SeriesTable()
    frame, _, _ = FrameDecoder({"M-1": profile}, table).decode([raw])
    return per_poll, {r.channel.value: r.value for r in frame.to_readings(table)}


finite_float32 = st.integers(min_value=0, max_value=2**32 - 1).map(
    lambda bits: np.frombuffer(struct.pack("<I", bits), dtype=np.float32)[0]).filter(lambda x: bool(np.isfinite(x)))


@given(st.lists(finite_float32, min_size=1, max_size=50))
def test_every_float32_becomes_its_shortest_decimal(values: list[np.float32]) -> None:
    x32 = np.asarray(values, dtype=np.float32)
    got, _ = shortest_float32(x32)
    assert (got.astype(np.float32) == x32).all()  # reads back as the register's float32
    for x, shown in zip(x32.tolist(), got.tolist(), strict=True):
        expected = str(np.float32(x))  # numpy's Dragon4: the shortest decimal that reads back
        assert shown == float(expected), (x, expected, shown)


def test_the_issues_display_values_come_out_as_displayed() -> None:
    specs = [RegisterSpec(Channel.ENERGY_IMPORT, Function.INPUT, 0, DataType.FLOAT32, unit="kWh", kind=Kind.CUMULATIVE),
             RegisterSpec(Channel.FREQUENCY, Function.INPUT, 2, DataType.FLOAT32, unit="Hz"),
             RegisterSpec(Channel.VOLTAGE_L1, Function.INPUT, 4, DataType.FLOAT32, unit="V"),
             RegisterSpec(Channel.POWER, Function.INPUT, 6, DataType.FLOAT32, unit="W")]
    per_poll, frame = decoded(specs, f32_words(12345.6) + f32_words(50.02) + f32_words(229.8) + f32_words(1234.5))
    assert per_poll == frame
    assert {k: repr(v) for k, v in frame.items()} == {
        "energy_import": "12345.6", "frequency": "50.02", "voltage_l1": "229.8", "power": "1.2345"}  # W -> kW


def test_an_integer_register_with_a_scale_has_exactly_the_scales_decimals() -> None:
    specs = [RegisterSpec(Channel.ENERGY_IMPORT, Function.INPUT, 0, DataType.INT32, unit="kWh", scale=0.01,
                          kind=Kind.CUMULATIVE),
             RegisterSpec(Channel.ENERGY_EXPORT, Function.INPUT, 2, DataType.INT32, unit="Wh", scale=0.1,
                          kind=Kind.CUMULATIVE),
             RegisterSpec(Channel.VOLTAGE_L1, Function.INPUT, 4, DataType.INT32, unit="V", scale=0.1, offset=0.05)]
    per_poll, frame = decoded(specs, i32_words(1234567) + i32_words(1234567) + i32_words(2298))
    assert per_poll == frame
    assert {k: repr(v) for k, v in frame.items()} == {
        "energy_import": "12345.67", "energy_export": "123.4567", "voltage_l1": "229.85"}


def test_a_float64_register_keeps_its_float64() -> None:
    specs = [RegisterSpec(Channel.ENERGY_IMPORT, Function.INPUT, 0, DataType.FLOAT64, unit="kWh", kind=Kind.CUMULATIVE)]
    per_poll, frame = decoded(specs, f64_words(12345.600000000002))
    assert per_poll == frame == {"energy_import": 12345.600000000002}


@pytest.mark.parametrize(("number", "dtype", "scale", "factor", "shown"), [
    (np.float32(0.1).item(), ">f4", 1.0, 1.0, "0.1"),
    (np.float32(99999.99).item(), ">f4", 1.0, 0.001, "99.99999"),
    (np.float32(1234.5).item(), ">f4", 0.1, 0.001, "0.12345"),
    (123, ">i4", 0.001, 1.0, "0.123"),
    (-5, ">i2", 0.5, 1.0, "-2.5"),
    (2**40 + 7, ">u8", 0.01, 1.0, "10995116277.83"),  # 64-bit: the rounding path
    (12345.600000000002, ">f8", 1.0, 1.0, "12345.600000000002"),
])
def test_one_value_alone(number: float, dtype: str, scale: float, factor: float, shown: str) -> None:
    assert repr(shown_value(number, dtype=dtype, scale=scale, offset=0.0, factor=factor)) == shown


def test_consumption_adds_up_in_decimal() -> None:
    assert 12345.7 - 12345.6 != 0.1  # what float arithmetic gives: 0.10000000000036380
    assert shown_sum(12345.7, -12345.6) == 0.1
    assert shown_sum(12346.1, -12345.6) == 0.5
    assert shown_sum(3.2, -99999.9, 100000.0) == 3.3  # across a rollover of a 1e5 register
    assert [decimals_of(x) for x in (0.001, 2.0, 1e-05, 1200.0, 12.345)] == [3, 0, 5, 0, 3]
