"""COSEM values as the gateway reads them: OBIS codes as map codes, a register's scaler and unit
applied exactly (Decimal), the clock's date-time, a profile's rows.

Codes are "A-B:C.D.E" (F omitted when 255, else "A-B:C.D.E*F"), so DLMS, P1 and SML share maps.
Units are the COSEM unit enumeration (IEC 62056-6-2 / Blue Book table "Enumerated values for
physical units") in the spelling gateway/model/units.py converts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from drivers.dlms.axdr import DateTimeBytes, Value

#: COSEM unit enum -> the unit the object maps and gateway/model/units.py spell.
UNITS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency", 11: "m",
    12: "m/s", 13: "m3", 14: "m3", 15: "m3/h", 16: "m3/h", 17: "m3/d", 18: "m3/d", 19: "L", 20: "kg", 21: "N",
    22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh",
    32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm2/m", 40: "Wb", 41: "T",
    42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)", 47: "1/(VAh)", 48: "V2h", 49: "A2h", 50: "kg/s",
    51: "S", 52: "K", 56: "%", 57: "Ah",
}
#: "count" and "other unit": a number without a unit.
NO_UNIT = (254, 255)

_OBIS = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[.*](\d{1,3}))?$")


def obis_code(ln: bytes) -> str:
    """A logical name (6 bytes) as a map code: b'\\x01\\x00\\x01\\x08\\x00\\xff' -> "1-0:1.8.0"."""
    if len(ln) != 6:
        raise ValueError(f"a logical name is 6 bytes, got {len(ln)}: {ln.hex()}")
    a, b, c, d, e, f = ln
    code = f"{a}-{b}:{c}.{d}.{e}"
    return code if f == 255 else f"{code}*{f}"


def obis_bytes(code: str) -> bytes:
    """A code ("1-0:1.8.0", "1-0:1.8.0.255", "1-0:1.8.0*255") as a 6-byte logical name; ValueError."""
    m = _OBIS.match(code.strip())
    if m is None:
        raise ValueError(f"{code!r} is not an OBIS code (A-B:C.D.E or A-B:C.D.E.F)")
    parts = [int(g) if g is not None else 255 for g in m.groups()]
    if any(p > 255 for p in parts):
        raise ValueError(f"{code!r}: every OBIS group is 0..255")
    return bytes(parts)


def normal_code(code: str) -> str:
    """The map spelling of any OBIS spelling ("1-0:1.8.0.255" -> "1-0:1.8.0")."""
    return obis_code(obis_bytes(code))


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    scaler: int
    unit: str | None  # None: count / no unit

    @classmethod
    def from_value(cls, value: Value) -> ScalerUnit:
        """A Register's attribute 3: structure {integer scaler, enum unit}; TypeError otherwise."""
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int)
                and isinstance(value[1], int) and not isinstance(value[0], bool)):
            raise TypeError(f"scaler_unit must be structure {{integer, enum}}, got {value!r:.80}")
        scaler, unit = value[0], value[1]
        assert isinstance(scaler, int) and isinstance(unit, int)
        if not -128 <= scaler <= 127:
            raise TypeError(f"scaler {scaler} is out of range")
        return cls(scaler, None if unit in NO_UNIT else UNITS.get(unit, f"unit#{unit:d}"))


def scaled(value: Value, su: ScalerUnit | None) -> Decimal:
    """A register value × 10^scaler, exactly (12345678, -3 -> Decimal('12345.678')); TypeError for a
    value that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"value must be a number, got {type(value).__name__} {value!r:.60}")
    number = Decimal(value)
    return number.scaleb(su.scaler) if su is not None and su.scaler else number


@dataclass(frozen=True, slots=True)
class MeterTime:
    """A COSEM date-time: the instant (UTC) and the clock status bits (None: not specified)."""

    at: datetime
    status: int | None


def date_time(raw: Value) -> MeterTime:
    """A date-time (a 12-byte octet-string or date-time value) as UTC; ValueError for one that is
    not a full date and time. A deviation of 0x8000 (not specified) is taken as UTC."""
    if not isinstance(raw, bytes) or len(raw) != 12:
        raise ValueError(f"a date-time is 12 bytes, got {raw!r:.60}")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    status = raw[11]
    if year == 0xFFFF or month > 12 or day > 31 or hour == 0xFF or minute == 0xFF:
        raise ValueError(f"date-time {raw.hex()} leaves date or time unspecified")
    local = datetime(year, month, day, hour, minute, 0 if second == 0xFF else second,
                     0 if hundredths == 0xFF else hundredths * 10_000)
    # COSEM's deviation is UTC minus local time in minutes (dlms-cosem writes it the same way).
    offset = timedelta(0) if deviation == -0x8000 else timedelta(minutes=deviation)
    return MeterTime((local + offset).replace(tzinfo=UTC), None if status == 0xFF else status)


def is_date_time(raw: Value) -> bool:
    return isinstance(raw, bytes) and len(raw) == 12 and (isinstance(raw, DateTimeBytes) or raw[:2] != b"\xff\xff")


__all__ = ["NO_UNIT", "UNITS", "MeterTime", "ScalerUnit", "date_time", "is_date_time", "normal_code",
           "obis_bytes", "obis_code", "scaled"]
