"""Register decoding: a table of (type, order, words) -> value."""

from __future__ import annotations

import math
import struct

import pytest

from gateway.model import Channel
from gateway.model.profiles import ByteOrder, DataType, DeviceFlag, FlagSpec, Function, RegisterSpec
from gateway.normalise.registers import NotAvailable, decode, flag_raised, words_for
from gateway.normalise.units import conversion_factor


def spec(t: DataType, order: ByteOrder = ByteOrder.ABCD, scale: float = 1.0, offset: float = 0.0) -> RegisterSpec:
    return RegisterSpec(channel=Channel.POWER, function=Function.INPUT, address=0, type=t, order=order,
                        scale=scale, offset=offset)


F = struct.unpack(">HH", struct.pack(">f", 230.5))  # (0x4366, 0x8000)


@pytest.mark.parametrize(("t", "order", "words", "expected"), [
    (DataType.UINT16, ByteOrder.ABCD, (0xFFFF,), 65535.0),
    (DataType.INT16, ByteOrder.ABCD, (0xFFFF,), -1.0),
    (DataType.UINT32, ByteOrder.ABCD, (0x0001, 0x0000), 65536.0),
    (DataType.UINT32, ByteOrder.CDAB, (0x0000, 0x0001), 65536.0),
    (DataType.INT32, ByteOrder.ABCD, (0xFFFF, 0xFFFE), -2.0),
    (DataType.FLOAT32, ByteOrder.ABCD, F, 230.5),
    (DataType.FLOAT32, ByteOrder.CDAB, (F[1], F[0]), 230.5),
    (DataType.FLOAT32, ByteOrder.BADC, tuple(int.from_bytes(w.to_bytes(2, "big"), "little") for w in F), 230.5),
    (DataType.FLOAT32, ByteOrder.DCBA, tuple(int.from_bytes(w.to_bytes(2, "big"), "little") for w in reversed(F)), 230.5),
    (DataType.UINT64, ByteOrder.ABCD, (0, 0, 1, 0), 65536.0),
    (DataType.INT64, ByteOrder.ABCD, (0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), -1.0),
    (DataType.FLOAT64, ByteOrder.ABCD, struct.unpack(">HHHH", struct.pack(">d", -1.25)), -1.25),
])
def test_decode_table(t: DataType, order: ByteOrder, words: tuple[int, ...], expected: float) -> None:
    assert decode(words, spec(t, order)) == expected


def test_scale_and_offset() -> None:
    assert decode((1234,), spec(DataType.UINT16, scale=0.1, offset=-3.0)) == pytest.approx(120.4)


def test_wrong_word_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="float32 needs 2 registers, got 1"):
        decode((1,), spec(DataType.FLOAT32))


def test_nan_decodes_as_nan() -> None:
    assert math.isnan(decode((0x7FC0, 0x0000), spec(DataType.FLOAT32)))


@pytest.mark.parametrize(("t", "words", "marker"), [
    (DataType.UINT32, (0xFFFF, 0xFFFF), 0xFFFFFFFF),
    (DataType.INT32, (0x7FFF, 0xFFFF), 0x7FFFFFFF),
    (DataType.UINT64, (0xFFFF,) * 4, 0xFFFFFFFFFFFFFFFF),
    (DataType.INT16, (0x8000,), -32768),
])
def test_not_available_marker(t: DataType, words: tuple[int, ...], marker: int) -> None:
    s = RegisterSpec(channel=Channel.POWER, function=Function.INPUT, address=0, type=t, scale=0.01,
                     not_available=marker)
    with pytest.raises(NotAvailable, match="'not available' marker"):
        decode(words, s)
    one_less = (*words[:-1], words[-1] - 1)
    assert math.isfinite(decode(one_less, s))  # a neighbouring value is a value


@pytest.mark.parametrize(("word", "bit", "active", "raised"), [
    (0b0000, 0, True, False), (0b0001, 0, True, True), (0b1000, 3, True, True),
    (0x8000, 15, True, True), (0b0111, 3, True, False), (0b0000, 2, False, True), (0b0100, 2, False, False),
])
def test_flag_bits(word: int, bit: int, active: bool, raised: bool) -> None:
    assert flag_raised(word, FlagSpec(DeviceFlag.TAMPER, Function.INPUT, 0, bit, active)) is raised


def test_flag_bit_is_validated() -> None:
    with pytest.raises(ValueError, match=r"tamper flag at 0x0004: bit must be 0\.\.15, got 16"):
        FlagSpec(DeviceFlag.TAMPER, Function.INPUT, 4, 16)


def test_words_for_slices_blocks() -> None:
    s = RegisterSpec(channel=Channel.POWER, function=Function.INPUT, address=4, type=DataType.FLOAT32)
    assert words_for(s, {(4, 0): (0, 1, 2, 3, 4, 5, 6)}) == (4, 5)
    assert words_for(s, {(3, 0): (0, 1, 2, 3, 4, 5, 6)}) is None  # holding, not input
    assert words_for(s, {(4, 0): (0, 1, 2, 3, 4)}) is None  # block too short


@pytest.mark.parametrize(("unit", "channel", "factor"), [
    ("Wh", Channel.ENERGY_IMPORT, 1e-3),
    ("MWh", Channel.ENERGY_IMPORT, 1e3),
    ("W", Channel.POWER, 1e-3),
    ("L", Channel.VOLUME, 1e-3),
    ("gal", Channel.VOLUME, 0.003785411784),
    ("ft3", Channel.VOLUME, 0.028316846592),
    ("", Channel.POWER_FACTOR, 1.0),
])
def test_units(unit: str, channel: Channel, factor: float) -> None:
    assert conversion_factor(unit, channel) == pytest.approx(factor)


def test_unit_for_wrong_channel_is_named() -> None:
    with pytest.raises(ValueError, match="unit 'V' cannot be converted to energy_import"):
        conversion_factor("V", Channel.ENERGY_IMPORT)
