"""Our M-Bus decoder against libmbus' recorded frames from real meters and its own decoding of them
(/work/shared/fixtures/mbus/libmbus, rscada/libmbus f09d613, BSD-3-Clause; see its SOURCE.md).

Every frame of test-frames/ is decoded and compared record by record with NAME.norm.xml: the
storage number, tariff and subunit of every record, and the value of every record whose quantity
our channel maps can read (energy, volume, power, flow, temperatures, voltage, current) plus the
ids and durations. Every frame of error-frames/ gives a FrameError, never another exception.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.mbus import frame, records
from tests.fixtures.shared import shared_fixture

LIBMBUS = "mbus/libmbus"
# libmbus' normalised quantity -> ours, with the factor from our unit to libmbus' (Wh, J, m^3, s ...).
NUMERIC = {
    "Energy": "energy", "Volume": "volume", "Power": "power", "Volume flow": "volume_flow",
    "Flow temperature": "flow_temperature", "Return temperature": "return_temperature",
    "Temperature difference": "temperature_difference", "External temperature": "external_temperature",
    "Voltage": "voltage", "Current": "current", "Operating time": "operating_time", "On time": "on_time",
    "Fabrication No": "fabrication_no",
}
# Our unit -> libmbus' normalised unit, by factor.
TO_LIBMBUS = {"MWh": Decimal(10) ** 6, "GJ": Decimal(10) ** 9, "kWh": Decimal(1000)}


#: Records whose BCD has non-decimal nibbles: libmbus decodes them anyway, we keep them raw.
BCD_QUIRKS = {("ELS_Elster-F96-Plus.hex", "power:err"), ("ELS_Elster-F96-Plus.hex", "volume_flow:err"),
              ("abb_f95.hex", "power:err"), ("abb_f95.hex", "volume_flow:err")}


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except ArithmeticError:
        return None


def _frames(folder: str) -> list[Path]:
    return sorted((shared_fixture(LIBMBUS) / folder).glob("*.hex"))


def _decode(path: Path) -> records.Telegram:
    parsed = frame.parse(frame.from_hex(path.read_text()))
    assert isinstance(parsed, frame.LongFrame)
    return records.decode(parsed.ci, parsed.data, path.name)


def _norm(path: Path) -> list[dict[str, str]]:
    root = ET.parse(path.with_suffix(".norm.xml")).getroot()
    return [{child.tag: (child.text or "") for child in rec} for rec in root.iter("DataRecord")]


def test_the_oracle_is_there() -> None:
    assert len(_frames("test-frames")) >= 70
    assert len(_frames("error-frames")) >= 20


def _cases() -> list[str]:
    folder = Path("/work/shared/fixtures") / LIBMBUS / "test-frames"
    return sorted(p.name for p in folder.glob("*.hex")) or ["(absent)"]


@pytest.mark.parametrize("name", _cases())
def test_every_recorded_frame_decodes_as_libmbus_does(name: str) -> None:
    path = shared_fixture(LIBMBUS) / "test-frames" / name
    telegram = _decode(path)
    expected = _norm(path)
    ours = list(telegram.records)
    # libmbus lists the manufacturer-specific block (DIF 0x0F/0x1F) as a record of its own.
    if telegram.special:
        mfr = expected.pop()
        assert mfr["Function"] in ("Manufacturer specific", "More records follow")
        if telegram.manufacturer_data:
            assert mfr["Value"].replace(" ", "").upper() == telegram.manufacturer_data.hex().upper()
    assert len(ours) == len(expected), f"{name}: {len(ours)} records, libmbus {len(expected)}"
    compared = 0
    for i, (rec, want) in enumerate(zip(ours, expected, strict=True)):
        where = f"{name} record {i} ({rec.code}, libmbus {want.get('Quantity')!r})"
        if "StorageNumber" in want:
            assert rec.storage == int(want["StorageNumber"]), where
        if "Tariff" in want:
            assert rec.tariff == int(want["Tariff"]), where
        if "Device" in want:
            assert rec.subunit == int(want["Device"]), where
        quantity = want.get("Quantity", "")
        if quantity in NUMERIC and want.get("Function") != "Manufacturer specific":
            assert rec.quantity.name == NUMERIC[quantity], where
        if isinstance(rec.value, str) and quantity in NUMERIC:  # a text (variable-length) id: as sent
            assert rec.value == want["Value"], where
            compared += 1
        elif quantity == "Time point (date)" and isinstance(rec.value, date):
            assert rec.value.isoformat() == want["Value"], where
        elif quantity == "Time point (date & time)" and isinstance(rec.value, datetime):
            assert rec.value.strftime("%Y-%m-%dT%H:%M") == want["Value"][:16], where
        elif _number(want.get("Value", "")) is not None:
            # Every record libmbus gives a number for (ids, versions, error flags too): the raw values.
            if rec.value is None:
                # libmbus reads BCD with non-decimal nibbles (0xA..0xF) as if they were digits; we
                # refuse such a value and say why (Elster F96 Plus, ABB F95: values during error state).
                assert rec.problem.startswith("BCD") and (name, rec.code) in BCD_QUIRKS, where
                continue
            assert isinstance(rec.value, Decimal), where
            ours_value = rec.value * TO_LIBMBUS.get(rec.quantity.unit, Decimal(1))
            # libmbus prints 6 decimals of a double: equal to that precision.
            tolerance = Decimal("0.0000015") * max(Decimal(1), abs(ours_value))
            assert abs(ours_value - Decimal(want["Value"])) <= tolerance, where
            compared += 1
    if any(w.get("Quantity") in NUMERIC for w in expected):
        assert compared, f"{name}: no value compared"


def test_values_keep_the_decimals_the_meter_shows() -> None:
    """ACW Itron BM+m: VIF 0x13 (litres) 0x0000D431 = 54321 -> exactly 54.321 m3."""
    telegram = _decode(shared_fixture(LIBMBUS) / "test-frames" / "ACW_Itron-BM-plus-m.hex")
    volume = next(r for r in telegram.records if r.code == "volume" and r.storage == 0)
    assert volume.value == Decimal("54.321")
    assert str(volume.value) == "54.321"
    assert telegram.ident == "11490378" and telegram.manufacturer == "ACW"


@pytest.mark.parametrize("name", [p.name for p in sorted((Path("/work/shared/fixtures") / LIBMBUS / "error-frames")
                                                         .glob("*.hex"))] or ["(absent)"])
def test_every_error_frame_is_a_clear_frame_error(name: str) -> None:
    path = shared_fixture(LIBMBUS) / "error-frames" / name
    with pytest.raises(frame.FrameError) as caught:
        _decode(path)
    assert str(caught.value)
