"""Unit conversion to each channel's canonical unit (SPEC §3)."""

from __future__ import annotations

from gateway.model.readings import UNITS, Channel

# Factor from a device unit to the canonical unit, keyed by canonical unit.
_FACTORS: dict[str, dict[str, float]] = {
    "kWh": {"kWh": 1.0, "Wh": 1e-3, "MWh": 1e3, "GJ": 277.7777777777778, "MJ": 0.2777777777777778},
    "kW": {"kW": 1.0, "W": 1e-3, "MW": 1e3},
    "V": {"V": 1.0, "kV": 1e3},
    "A": {"A": 1.0, "mA": 1e-3},
    "Hz": {"Hz": 1.0},
    "°C": {"°C": 1.0},  # kelvin needs an offset, not a factor: a map states degrees Celsius
    "": {"": 1.0},
    "m3": {"m3": 1.0, "L": 1e-3, "gal": 0.003785411784, "ft3": 0.028316846592},
    "m3/h": {"m3/h": 1.0, "L/h": 1e-3, "L/s": 3.6, "gal/min": 0.22712470704, "ft3/h": 0.028316846592},
}
_ALIASES = {"degC": "°C", "C": "°C", "m³": "m3", "m³/h": "m3/h", "l": "L", "gallon": "gal", "gallons": "gal", "ft³": "ft3", "": ""}


def conversion_factor(unit: str, channel: Channel) -> float:
    """Multiply a value in `unit` by this to get the channel's canonical unit.

    An empty unit means "already canonical". Raises ValueError naming both if the unit
    does not measure what the channel measures (e.g. V for energy_import).
    """
    canonical = UNITS[channel]
    if unit == "":
        return 1.0
    unit = _ALIASES.get(unit, unit)
    table = _FACTORS[canonical]
    if unit not in table:
        known = ", ".join(u for u in table if u) or "(none: leave unit empty)"
        msg = f"unit {unit!r} cannot be converted to {channel.value} ({canonical or 'no unit'}); known: {known}"
        raise ValueError(msg)
    return table[unit]
