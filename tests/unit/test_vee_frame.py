"""The columnar path: ReadingFrame round trips, and FrameDecoder (the pipeline's decoder) held to
the Normaliser (the per-poll decoder) value for value, for every register type and byte order."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.samples import RawRegisters, RegisterBlock
from gateway.model import Channel, EventKind, Kind, Quality, Reading, Source, Status, Utility
from gateway.model.profiles import ByteOrder, DataType, DeviceFlag, DeviceProfile, FlagSpec, Function, RegisterSpec
from gateway.normalise.frame import FrameDecoder, ReadingFrame, SeriesTable
from gateway.normalise.normaliser import Normaliser

T0 = datetime(2026, 3, 2, tzinfo=UTC)
UNITS = {Channel.ENERGY_IMPORT: ["kWh", "Wh", "MWh"], Channel.VOLUME: ["m3", "L", "gal", "ft3"],
         Channel.POWER: ["kW", "W"], Channel.VOLTAGE_L1: ["V"], Channel.FLOW: ["m3/h", "L/h"]}


def profile_of(specs: list[RegisterSpec], flags: tuple[FlagSpec, ...] = ()) -> DeviceProfile:
    return DeviceProfile("t", "test", "test", "test map v1", Utility.ELECTRICITY, tuple(specs), flags=flags)


def layout(specs: list[RegisterSpec], flags: tuple[FlagSpec, ...] = ()) -> int:
    return max([s.address + s.words for s in specs] + [f.address + 1 for f in flags])


def poll(meter: str, words: list[int], k: int = 0) -> RawRegisters:
    ts = T0 + timedelta(minutes=15 * k)
    return RawRegisters(meter, ts, ts + timedelta(seconds=2), (RegisterBlock(4, 0, tuple(words)),), 0.01)


def both(profile: DeviceProfile, raws: list[RawRegisters]) -> tuple[tuple[list, list, list], tuple[list, list, list]]:  # type: ignore[type-arg]
    normaliser = Normaliser(dict.fromkeys({r.meter_id for r in raws}, profile), {})
    per_poll = [normaliser.registers(r) for r in raws]
    expected = ([(r.meter_id, r.channel, r.ts, r.value, r.kind, r.quality) for b in per_poll for r in b.readings],
                [(d.reason, d.detail, d.payload, d.meter_id) for b in per_poll for d in b.deadletters],
                [(e.meter_id, e.kind, e.ts) for b in per_poll for e in b.events])
    table = SeriesTable()
    frame, dead, events = FrameDecoder(dict.fromkeys({r.meter_id for r in raws}, profile), table).decode(raws)
    got = ([(r.meter_id, r.channel, r.ts, r.value, r.kind, r.quality) for r in frame.to_readings(table)],
           [(d.reason, d.detail, d.payload, d.meter_id) for d in dead],
           [(e.meter_id, e.kind, e.ts) for e in events])
    return expected, got


spec_strategy = st.tuples(st.sampled_from(list(DataType)), st.sampled_from(list(ByteOrder)),
                          st.sampled_from([1.0, 0.1, 0.01, 1e-3, 10.0]), st.sampled_from([0.0, -40.0]),
                          st.sampled_from(list(UNITS)), st.data())


@settings(max_examples=60, deadline=None)
@given(st.lists(spec_strategy, min_size=1, max_size=4), st.integers(min_value=1, max_value=6), st.data())
def test_frame_decoder_agrees_with_the_normaliser(specs_in: list, polls: int, data: st.DataObject) -> None:  # type: ignore[type-arg]
    specs, address, used = [], 0, set()
    for dtype, order, scale, offset, channel, d in specs_in:
        if channel in used:
            continue
        used.add(channel)
        unit = d.draw(st.sampled_from(UNITS[channel]))
        na = d.draw(st.sampled_from([None, 0xFFFF, (1 << (16 * dtype.words)) - 1]))
        if na is not None and dtype.value.startswith("int"):
            na = -1
        kind = Kind.CUMULATIVE if channel in (Channel.ENERGY_IMPORT, Channel.VOLUME) else Kind.INSTANTANEOUS
        specs.append(RegisterSpec(channel, Function.INPUT, address, dtype, order, scale, offset, unit, kind,
                                  not_available=na))
        address += dtype.words + d.draw(st.integers(min_value=0, max_value=2))
    flags = (FlagSpec(DeviceFlag.TAMPER, Function.INPUT, address, data.draw(st.integers(0, 15))),)
    width = layout(specs, flags)
    word = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80]))
    raws = [poll(f"M-{i % 3}", data.draw(st.lists(word, min_size=width, max_size=width)), k=i) for i in range(polls)]
    expected, got = both(profile_of(specs, flags), raws)
    assert got[0] == expected[0] or _close(got[0], expected[0])
    assert got[1] == expected[1]
    assert got[2] == expected[2]


def _close(a: list, b: list) -> bool:  # type: ignore[type-arg]
    # Identical arithmetic gives identical floats; this is only here to print a readable diff.
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:3] == y[:3] and x[4:] == y[4:]
        assert x[3] == y[3] or (math.isnan(x[3]) and math.isnan(y[3])), (x, y)
    return True


@pytest.mark.parametrize(("dtype", "unit", "scale", "words", "channel", "value"), [
    (DataType.UINT32, "Wh", 1.0, [0x0001, 0x86A0], Channel.ENERGY_IMPORT, 100.0),  # 100,000 Wh
    (DataType.UINT32, "MWh", 0.001, [0x0000, 0x3039], Channel.ENERGY_IMPORT, 12_345.0),  # 12.345 MWh
    (DataType.INT32, "kWh", 0.01, [0x0000, 0x3039], Channel.ENERGY_IMPORT, 123.45),  # scaled integer
    (DataType.UINT32, "L", 1.0, [0x0000, 0x09C4], Channel.VOLUME, 2.5),
    (DataType.UINT32, "gal", 1.0, [0x0000, 0x0064], Channel.VOLUME, 0.3785411784),
    (DataType.UINT32, "ft3", 1.0, [0x0000, 0x000A], Channel.VOLUME, 0.28316846592),
    (DataType.FLOAT32, "W", 1.0, list(struct.unpack(">HH", struct.pack(">f", 1500.0))), Channel.POWER, 1.5),
])
def test_values_arrive_in_canonical_units(dtype: DataType, unit: str, scale: float, words: list[int],
                                          channel: Channel, value: float) -> None:
    spec = RegisterSpec(channel, Function.INPUT, 0, dtype, ByteOrder.ABCD, scale, 0.0, unit, Kind.CUMULATIVE)
    table = SeriesTable()
    frame, dead, _ = FrameDecoder({"M-1": profile_of([spec])}, table).decode([poll("M-1", words)])
    assert dead == [] and frame.value.tolist() == [pytest.approx(value)]


@pytest.mark.parametrize(("marker", "number"), [
    (0, 0.0),  # a float register that holds exactly its marker
    (65_535, 65_535.0),
    (0xFFFFFFFF, 4294967296.0),  # the marker only rounds to this float32: a value, not the marker
])
def test_a_float_register_with_an_integer_marker_decodes_alike(marker: int, number: float) -> None:
    spec = RegisterSpec(Channel.POWER, Function.INPUT, 0, DataType.FLOAT32, unit="kW", not_available=marker)
    words = list(struct.unpack(">HH", struct.pack(">f", number)))
    expected, got = both(profile_of([spec]), [poll("M-1", words), poll("M-2", [0x3F80, 0])])
    assert got == expected
    # Values as the meter shows them: the float32 2^32 reads as the shortest decimal that is it.
    shown = float(str(np.float32(number)))
    assert [r[3] for r in got[0]] == ([1.0] if number == marker else [shown, 1.0])


def test_nan_words_become_dead_letters_not_readings() -> None:
    spec = RegisterSpec(Channel.POWER, Function.INPUT, 0, DataType.FLOAT32, unit="kW")
    table = SeriesTable()
    frame, dead, _ = FrameDecoder({"M-1": profile_of([spec])}, table).decode(
        [poll("M-1", [0xFFFF, 0xFFFF]), poll("M-2", [0x3F80, 0x0000])])
    assert len(frame) == 0 and sorted(d.reason for d in dead) == ["non_finite", "unknown_meter"]
    frame, dead, _ = FrameDecoder({"M-1": profile_of([spec]), "M-2": profile_of([spec])}, table).decode(
        [poll("M-1", [0xFFFF, 0xFFFF]), poll("M-2", [0x3F80, 0x0000])])
    assert frame.value.tolist() == [1.0] and [(d.reason, d.meter_id) for d in dead] == [("non_finite", "M-1")]


def test_tamper_bits_mark_the_poll_and_raise_one_event_per_episode() -> None:
    spec = RegisterSpec(Channel.POWER, Function.INPUT, 0, DataType.UINT16, unit="W")
    flag = FlagSpec(DeviceFlag.TAMPER, Function.INPUT, 1, bit=3)
    profile = profile_of([spec], (flag,))
    table = SeriesTable()
    decoder = FrameDecoder({"M-1": profile}, table)
    qualities, kinds = [], []
    for k, status in enumerate([0, 8, 8, 0, 8]):
        frame, _, events = decoder.decode([poll("M-1", [100, status], k)])
        qualities.append(int(frame.quality[0]))
        kinds += [(e.kind, e.ts) for e in events]
    assert qualities == [0, int(Quality.TAMPER), int(Quality.TAMPER), 0, int(Quality.TAMPER)]
    assert kinds == [(EventKind.TAMPER, T0 + timedelta(minutes=15)), (EventKind.TAMPER, T0 + timedelta(minutes=60))]


def test_polls_with_another_block_layout_are_still_decoded() -> None:
    spec = RegisterSpec(Channel.POWER, Function.INPUT, 2, DataType.UINT16, unit="W")
    table = SeriesTable()
    odd = RawRegisters("M-2", T0, T0, (RegisterBlock(4, 2, (7,)),), 0.0)
    frame, dead, _ = FrameDecoder({"M-1": profile_of([spec]), "M-2": profile_of([spec])}, table).decode(
        [poll("M-1", [0, 0, 5]), odd])
    assert sorted(frame.value.tolist()) == [0.005, 0.007] and dead == []


def test_reading_frame_round_trip_keeps_objects_and_makes_utc() -> None:
    table = SeriesTable()
    plus3 = timezone(timedelta(hours=3))
    readings = [
        Reading("B", Channel.ENERGY_IMPORT, T0, 1.0, Kind.CUMULATIVE, received_at=T0, note="kept"),
        Reading("A", Channel.POWER, datetime(2026, 3, 2, 3, tzinfo=plus3), -2.0, Kind.INSTANTANEOUS,
                quality=Quality.TAMPER, status=Status.SUSPECT, source=Source.MQTT),
        Reading("A", Channel.POWER, datetime(2026, 3, 2, 1), 2.0, Kind.INSTANTANEOUS),  # naive = UTC
    ]
    frame = ReadingFrame.from_readings(readings, table)
    assert frame.ts.tolist() == [1772409600000000, 1772409600000000, 1772413200000000]
    back = frame.to_readings(table)
    assert back[0] is readings[0]
    assert back[1] == readings[1] and back[1].ts.tzinfo is UTC and back[2].ts == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert table.keys == [("B", Channel.ENERGY_IMPORT), ("A", Channel.POWER)] and table.rank().tolist() == [1, 0]


def test_a_float_marker_is_named_in_the_not_available_message() -> None:
    from gateway.normalise.registers import NotAvailable, decode

    spec = RegisterSpec(Channel.POWER, Function.INPUT, 0, DataType.FLOAT32, unit="kW", not_available=0)
    with pytest.raises(NotAvailable, match=r"^float32 0\.0 is the device's 'not available' marker$"):
        decode(list(struct.unpack(">HH", struct.pack(">f", 0.0))), spec)
