"""Value information (EN 13757-3 §6.4): what a VIF (and its VIFEs) says a record is, in which unit
and with which decimal factor.

`meaning(vif, vifes)` gives a `Quantity`: a stable name (the first part of a record's code, see
drivers/mbus/records.py), the unit the meter states, and the exact factor its integer is scaled by
(VIF 0x13: litres, 10^-3 m3). Tables, not code: a VIF the tables do not know is "vif_0x.." with
no unit, kept raw, never a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str  # "volume", "energy", "flow_temperature", ... ("date", "datetime" for time points)
    unit: str  # as the meter states it, in the gateway's spelling ("m3", "Wh", "°C", ""), "" for none
    factor: Decimal = Decimal(1)


def _p(exponent: int) -> Decimal:
    return Decimal(1).scaleb(exponent)


_TIME_UNITS = (("s", Decimal(1)), ("s", Decimal(60)), ("s", Decimal(3600)), ("s", Decimal(86400)))

# Primary VIFs, extension bit cleared: (first, last, name, unit, exponent of the first).
_RANGES: tuple[tuple[int, int, str, str, int], ...] = (
    (0x00, 0x07, "energy", "Wh", -3),
    (0x08, 0x0F, "energy", "J", 0),
    (0x10, 0x17, "volume", "m3", -6),
    (0x18, 0x1F, "mass", "kg", -3),
    (0x28, 0x2F, "power", "W", -3),
    (0x30, 0x37, "power", "J/h", 0),
    (0x38, 0x3F, "volume_flow", "m3/h", -6),
    (0x40, 0x47, "volume_flow", "m3/min", -7),
    (0x48, 0x4F, "volume_flow", "m3/s", -9),
    (0x50, 0x57, "mass_flow", "kg/h", -3),
    (0x58, 0x5B, "flow_temperature", "°C", -3),
    (0x5C, 0x5F, "return_temperature", "°C", -3),
    (0x60, 0x63, "temperature_difference", "K", -3),
    (0x64, 0x67, "external_temperature", "°C", -3),
    (0x68, 0x6B, "pressure", "bar", -3),
)
_DURATIONS = {0x20: "on_time", 0x24: "operating_time", 0x70: "averaging_duration", 0x74: "actuality_duration"}
_SINGLE = {0x6C: Quantity("date", ""), 0x6D: Quantity("datetime", ""), 0x6E: Quantity("hca_units", ""),
           0x78: Quantity("fabrication_no", ""), 0x79: Quantity("identification", ""),
           0x7A: Quantity("bus_address", ""), 0x7E: Quantity("any", ""), 0x7F: Quantity("manufacturer", "")}

# First extension table (VIF 0xFD): the ones meters send.
_FD_SINGLE = {0x08: "access_number", 0x09: "medium", 0x0A: "manufacturer_code", 0x0B: "parameter_set",
              0x0C: "model_version", 0x0D: "hardware_version", 0x0E: "firmware_version",
              0x0F: "software_version", 0x10: "customer_location", 0x11: "customer", 0x16: "password",
              0x17: "error_flags", 0x18: "error_mask", 0x1A: "digital_output", 0x1B: "digital_input",
              0x1C: "baud_rate", 0x1D: "response_delay", 0x1E: "retry", 0x3A: "dimensionless",
              0x60: "reset_counter", 0x61: "cumulation_counter", 0x74: "battery_days"}
# Second extension table (VIF 0xFB).
_FB_RANGES: tuple[tuple[int, int, str, str, int], ...] = (
    (0x00, 0x01, "energy", "MWh", -1),
    (0x08, 0x09, "energy", "GJ", -1),
    (0x10, 0x11, "volume", "m3", 2),
    (0x18, 0x19, "mass", "t", 2),
    (0x28, 0x29, "power", "MW", -1),
    (0x30, 0x31, "power", "GJ/h", -1),
    (0x58, 0x5B, "flow_temperature", "°F", -3),
    (0x5C, 0x5F, "return_temperature", "°F", -3),
    (0x60, 0x63, "temperature_difference", "°F", -3),
    (0x64, 0x67, "external_temperature", "°F", -3),
)


def _in_ranges(code: int, ranges: tuple[tuple[int, int, str, str, int], ...]) -> Quantity | None:
    for first, last, name, unit, exponent in ranges:
        if first <= code <= last:
            return Quantity(name, unit, _p(exponent + code - first))
    return None


def primary(vif: int) -> Quantity:
    code = vif & 0x7F
    found = _in_ranges(code, _RANGES)
    if found is not None:
        return found
    for base, name in _DURATIONS.items():
        if base <= code <= base + 3:
            unit, factor = _TIME_UNITS[code - base]
            return Quantity(name, unit, factor)
    return _SINGLE.get(code) or Quantity(f"vif_{code:#04x}", "")


def first_extension(vife: int) -> Quantity:
    code = vife & 0x7F
    if 0x40 <= code <= 0x4F:
        return Quantity("voltage", "V", _p(code - 0x40 - 9))
    if 0x50 <= code <= 0x5F:
        return Quantity("current", "A", _p(code - 0x50 - 12))
    if 0x00 <= code <= 0x03:
        return Quantity("credit", "", _p(code - 3))
    if 0x04 <= code <= 0x07:
        return Quantity("debit", "", _p(code - 7))
    name = _FD_SINGLE.get(code)
    return Quantity(name, "") if name else Quantity(f"vif_0xfd{code:02x}", "")


def second_extension(vife: int) -> Quantity:
    code = vife & 0x7F
    return _in_ranges(code, _FB_RANGES) or Quantity(f"vif_0xfb{code:02x}", "")


def combinable(vifes: tuple[int, ...]) -> tuple[Decimal, tuple[int, ...]]:
    """The combinable VIFEs after a VIF: the factor the multiplicative corrections (0x70-0x77:
    10^(n-6), 0x7D: 10^3) give, and every other one, which changes what the record means and so
    becomes part of its code."""
    factor = Decimal(1)
    others = []
    for vife in vifes:
        code = vife & 0x7F
        if 0x70 <= code <= 0x77:
            factor *= _p(code - 0x70 - 6)
        elif code == 0x7D:
            factor *= _p(3)
        else:
            others.append(code)
    return factor, tuple(others)


__all__ = ["Quantity", "combinable", "first_extension", "primary", "second_extension"]
