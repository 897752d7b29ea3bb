"""The simulator's own register tables: what a simulated meter of each model serves.

Each table in `simulators/modbus/datasheets/` is transcribed from the manufacturer's published
register map (its header names the document, version and table), never derived from
`gateway/profiles/*.toml`. A profile is tested against these tables, so an address, word order,
type or scale that the profile gets wrong decodes the wrong number instead of being mirrored.

A `DeviceProfile` whose name has no table here (a layout a test writes for itself) is served as
its registers say, through `Datasheet.from_profile`; such a layout checks nothing about a product
profile, and `Datasheet.transcribed` says so.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from gateway.model.profiles import ByteOrder, DeviceProfile

#: The physical quantities a simulated meter can put in a register, by dimension.
_PHASES = ("l1", "l2", "l3")
QUANTITIES: Mapping[str, str] = MappingProxyType({
    **{q: "energy" for q in ("energy_import", "energy_export", "energy_total", "energy_net", "energy_import_partial")},
    **{f"energy_{d}_{p}": "energy" for d in ("import", "export", "total") for p in _PHASES},
    # Time-of-use registers: the energy counted while tariff n was in force (see SimMeter.tariff_of).
    **{f"energy_{d}_t{n}": "energy" for d in ("import", "export") for n in range(1, 5)},
    **{q: "reactive_energy" for q in ("reactive_import", "reactive_export", "reactive_total")},
    **{q: "power" for q in ("power", *(f"power_{p}" for p in _PHASES))},
    **{q: "reactive_power" for q in ("reactive_power", *(f"reactive_power_{p}" for p in _PHASES))},
    **{q: "apparent_power" for q in ("apparent_power", *(f"apparent_power_{p}" for p in _PHASES))},
    **{q: "voltage" for q in ("voltage_ln_avg", "voltage_ll_avg", "voltage_l1_l2", "voltage_l2_l3", "voltage_l3_l1",
                              *(f"voltage_{p}" for p in _PHASES))},
    **{q: "current" for q in ("current_n", "current_avg", "current_sum", *(f"current_{p}" for p in _PHASES))},
    **{q: "ratio" for q in ("power_factor", *(f"power_factor_{p}" for p in _PHASES))},
    **{q: "angle" for q in ("phase_angle", *(f"phase_angle_{p}" for p in _PHASES))},
    "frequency": "frequency",
    # Water, gas and heat quantities: an electricity meter model holds none, they read 0.
    "volume": "volume", "flow": "flow", "heat_energy": "energy",
})

#: Device unit -> (dimension, how many of the quantity's base unit one device unit is).
#: Base units: kWh, kvarh, kW, kvar, kVA, V, A, Hz, degrees, m3, m3/h. Written here, not imported.
UNITS: Mapping[str, tuple[str, float]] = MappingProxyType({
    "kWh": ("energy", 1.0), "Wh": ("energy", 1e-3), "MWh": ("energy", 1e3),
    "kvarh": ("reactive_energy", 1.0), "kVArh": ("reactive_energy", 1.0), "varh": ("reactive_energy", 1e-3),
    "kW": ("power", 1.0), "W": ("power", 1e-3), "MW": ("power", 1e3),
    "kvar": ("reactive_power", 1.0), "kVAr": ("reactive_power", 1.0), "var": ("reactive_power", 1e-3),
    "VAr": ("reactive_power", 1e-3),
    "kVA": ("apparent_power", 1.0), "VA": ("apparent_power", 1e-3),
    "V": ("voltage", 1.0), "kV": ("voltage", 1e3), "A": ("current", 1.0), "mA": ("current", 1e-3),
    "Hz": ("frequency", 1.0), "deg": ("angle", 1.0),
    "m3": ("volume", 1.0), "L": ("volume", 1e-3), "m3/h": ("flow", 1.0), "L/h": ("flow", 1e-3),
})


class Format(StrEnum):
    """Number formats as register tables name them."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def words(self) -> int:
        return int(self.value[-2:]) // 16

    @property
    def is_float(self) -> bool:
        return self.value.startswith("float")

    @property
    def signed(self) -> bool:
        return not self.value.startswith("u")


_FUNCTIONS = {"holding": 3, "input": 4}
_WORD_ORDERS = {"msw_first": False, "lsw_first": True}


@dataclass(frozen=True, slots=True)
class SheetRegister:
    """One parameter of a register table: where it is, how it is encoded, what it holds."""

    quantity: str
    function_code: int  # 3 holding, 4 input
    address: int  # wire address (0-based)
    format: Format
    low_word_first: bool = False
    swap_bytes: bool = False  # bytes of each word swapped (BADC / DCBA layouts)
    resolution: float = 1.0  # device units per count
    offset: float = 0.0
    unit: str = ""  # "" = the quantity's base unit
    wraps_at: float | None = None  # a counter that returns to 0 at this value (device units)
    parameter: str = ""  # the document's name for it

    @property
    def words(self) -> int:
        return self.format.words


@dataclass(frozen=True, slots=True)
class SheetStatusBit:
    """Bit `bit` of the 16-bit register at `address` reports `condition` when it equals `active`."""

    condition: str  # "tamper"
    function_code: int
    address: int
    bit: int
    active: bool = True


@dataclass(frozen=True, slots=True)
class SheetConstant:
    """A 16-bit register that always reads `value`, e.g. a model code."""

    function_code: int
    address: int
    value: int
    parameter: str = ""


@dataclass(frozen=True, slots=True)
class Datasheet:
    """A meter model's register table."""

    model: str
    manufacturer: str
    document: str
    registers: tuple[SheetRegister, ...]
    status: tuple[SheetStatusBit, ...] = ()
    #: True for a table transcribed from a published document; False for a layout taken from a
    #: profile (tests that build their own layouts), which cannot check that profile.
    transcribed: bool = True
    constants: tuple[SheetConstant, ...] = ()

    def register(self, quantity: str) -> SheetRegister:
        """The table's register holding `quantity` (KeyError if it has none)."""
        for reg in self.registers:
            if reg.quantity == quantity:
                return reg
        raise KeyError(quantity)

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> Datasheet:
        """The layout a profile describes, served as is (for layouts tests write themselves)."""
        registers = tuple(
            SheetRegister(
                quantity=spec.channel.value, function_code=spec.function.code, address=spec.address,
                format=Format(spec.type.value), low_word_first=spec.order in (ByteOrder.CDAB, ByteOrder.DCBA),
                swap_bytes=spec.order in (ByteOrder.BADC, ByteOrder.DCBA), resolution=spec.scale,
                offset=spec.offset, unit=spec.unit, wraps_at=spec.modulus,
            )
            for spec in profile.registers
        )
        status = tuple(SheetStatusBit(f.flag.value, f.function.code, f.address, f.bit, f.active) for f in profile.flags)
        return cls(profile.name, profile.manufacturer, f"layout of profile {profile.name}", registers, status,
                   transcribed=False)


def parse_datasheet(text: str, source: str) -> Datasheet:
    """Parse one table file. Every mistake raises ValueError naming the file and the entry."""
    data = tomllib.loads(text)
    device = data.get("device", {})
    try:
        base = _Defaults(device)
        registers = tuple(_register(entry, base, f"{source} register[{i}]")
                          for i, entry in enumerate(data.get("register", [])))
        status = tuple(_status(entry, base, f"{source} status[{i}]") for i, entry in enumerate(data.get("status", [])))
        constants = tuple(_constant(entry, base, f"{source} constant[{i}]")
                          for i, entry in enumerate(data.get("constant", [])))
        sheet = Datasheet(str(device["model"]), str(device["manufacturer"]), str(device["document"]), registers, status,
                          constants=constants)
    except KeyError as exc:
        msg = f"{source}: missing key {exc}"
        raise ValueError(msg) from None
    _check_overlaps(sheet, source)
    return sheet


class _Defaults:
    """`[device]` keys that every entry inherits unless it says otherwise."""

    def __init__(self, device: dict[str, Any]) -> None:
        self.function = device.get("function", "input")
        self.numbering = int(device.get("numbering", 0))  # the document's number of wire address 0
        self.format = device.get("format")
        self.word_order = device.get("word_order", "msw_first")


def _register(entry: dict[str, Any], base: _Defaults, where: str) -> SheetRegister:
    quantity = entry["quantity"]
    unit = entry.get("unit", "")
    if quantity not in QUANTITIES:
        msg = f"{where}: unknown quantity {quantity!r}"
        raise ValueError(msg)
    if unit and UNITS.get(unit, ("", 0.0))[0] != QUANTITIES[quantity]:
        msg = f"{where}: unit {unit!r} does not measure {quantity} ({QUANTITIES[quantity]})"
        raise ValueError(msg)
    fmt_name = entry.get("format", base.format)
    if fmt_name is None:
        msg = f"{where}: no format (set format here or in [device])"
        raise ValueError(msg)
    try:
        fmt = Format(str(fmt_name))
        function_code = _FUNCTIONS[entry.get("function", base.function)]
        low_word_first = _WORD_ORDERS[entry.get("word_order", base.word_order)]
    except (ValueError, KeyError) as exc:
        msg = f"{where}: {exc}"
        raise ValueError(msg) from None
    address = int(entry["number"]) - base.numbering
    resolution = float(entry.get("resolution", 1.0))
    if not 0 <= address <= 0x10000 - fmt.words or not math.isfinite(resolution) or resolution <= 0:
        msg = f"{where}: register {entry['number']} (wire address {address}) or resolution {resolution} out of range"
        raise ValueError(msg)
    wraps_at = entry.get("wraps_at")
    return SheetRegister(
        quantity=quantity, function_code=function_code, address=address, format=fmt, low_word_first=low_word_first,
        resolution=resolution, unit=unit, wraps_at=float(wraps_at) if wraps_at is not None else None,
        parameter=str(entry.get("parameter", "")),
    )


def _status(entry: dict[str, Any], base: _Defaults, where: str) -> SheetStatusBit:
    bit = int(entry["bit"])
    if not 0 <= bit <= 15:
        msg = f"{where}: bit must be 0..15, got {bit}"
        raise ValueError(msg)
    return SheetStatusBit(str(entry["condition"]), _FUNCTIONS[entry.get("function", base.function)],
                          int(entry["number"]) - base.numbering, bit, bool(entry.get("active", True)))


def _constant(entry: dict[str, Any], base: _Defaults, where: str) -> SheetConstant:
    value = int(entry["value"])
    if not 0 <= value <= 0xFFFF:
        msg = f"{where}: value must be 0..0xffff, got {value}"
        raise ValueError(msg)
    return SheetConstant(_FUNCTIONS[entry.get("function", base.function)], int(entry["number"]) - base.numbering,
                         value, str(entry.get("parameter", "")))


def _check_overlaps(sheet: Datasheet, source: str) -> None:
    taken: dict[tuple[int, int], str] = {
        (c.function_code, c.address): c.parameter or f"constant at {c.address:#06x}" for c in sheet.constants}
    for reg in sheet.registers:
        for k in range(reg.words):
            key = (reg.function_code, reg.address + k)
            if key in taken:
                msg = f"{source}: {reg.quantity} at {reg.address:#06x} overlaps {taken[key]}"
                raise ValueError(msg)
            taken[key] = reg.quantity


@cache
def datasheets() -> Mapping[str, Datasheet]:
    """Every shipped table, by model name (the name of the profile that reads that model)."""
    folder = resources.files("simulators.modbus.datasheets")
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            sheet = parse_datasheet(entry.read_text(encoding="utf-8"), f"simulators/modbus/datasheets/{entry.name}")
            found[sheet.model] = sheet
    return MappingProxyType(found)


def datasheet_for(layout: DeviceProfile | Datasheet) -> Datasheet:
    """What a simulated meter serves for `layout`: the model's own table when there is one.

    A profile names its model by its name (`sdm630` -> datasheets/sdm630.toml); its registers are
    then not used at all. A profile with no table of its own is served as written.
    """
    if isinstance(layout, Datasheet):
        return layout
    return datasheets().get(layout.name) or Datasheet.from_profile(layout)
