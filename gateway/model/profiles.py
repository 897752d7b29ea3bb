"""Meter maps as data: Modbus device profiles (register maps, loaded by gateway.config.profiles), and
object maps (code -> channel, for the protocols that identify values by a code: DLMS/COSEM and P1 by
OBIS code, M-Bus and wM-Bus by VIF, SML by OBIS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.model.meters import Utility
from gateway.model.readings import Channel, Kind
from gateway.model.units import conversion_factor


class Function(StrEnum):
    """Read function: holding registers (FC 03) or input registers (FC 04)."""

    HOLDING = "holding"
    INPUT = "input"

    @property
    def code(self) -> int:
        return 3 if self is Function.HOLDING else 4


class DataType(StrEnum):
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
        return _WORDS[self]


_WORDS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}


class ByteOrder(StrEnum):
    """Order of bytes on the wire, Telegraf's names: A is the most significant byte.

    ABCD big endian; DCBA little endian; BADC big-endian words with bytes swapped;
    CDAB little-endian word order (low word first) with big-endian words.
    """

    ABCD = "ABCD"
    DCBA = "DCBA"
    BADC = "BADC"
    CDAB = "CDAB"


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where one canonical channel lives in a meter's registers and how to decode it."""

    channel: Channel
    function: Function
    address: int  # wire address (0-based)
    type: DataType
    order: ByteOrder = ByteOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""  # the device's unit, converted to the channel's canonical unit
    kind: Kind = Kind.INSTANTANEOUS
    #: Value at which a cumulative register wraps to zero, in the device's raw units
    #: after scale (e.g. 99999999.9 kWh display -> 1e8); None if it does not wrap.
    modulus: float | None = None
    #: Raw register value (before scale) the device sends for "not available", e.g. 0xFFFFFFFF.
    not_available: int | None = None

    @property
    def words(self) -> int:
        return self.type.words


class DeviceFlag(StrEnum):
    """A condition a meter reports in a status register. Each maps to a Quality flag."""

    TAMPER = "tamper"  # cover opened, magnetic field, reverse current, ... as the device reports it
    RELAY_OPEN = "relay_open"  # the supply (disconnect) relay is open, as the device reports it


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One status bit: `flag` is raised when bit `bit` (0 = least significant) of the
    16-bit register at `address` equals `active`."""

    flag: DeviceFlag
    function: Function
    address: int
    bit: int
    active: bool = True

    @property
    def words(self) -> int:
        return 1

    def __post_init__(self) -> None:
        if not 0 <= self.bit <= 15:
            msg = f"{self.flag.value} flag at {self.address:#06x}: bit must be 0..15, got {self.bit}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class IdentifySpec:
    """A register that names the device model: the 16-bit register at `address` reads one of
    `values` on the models this profile is for (read by `meter-gateway scan`, never polled)."""

    function: Function
    address: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    name: str
    manufacturer: str
    model: str
    document: str  # the published register map this profile follows, with version
    utility: Utility
    registers: tuple[RegisterSpec, ...]
    max_registers_per_request: int = 125
    max_gap: int = 8  # registers of hole a single read may span to save a request
    flags: tuple[FlagSpec, ...] = ()  # status bits read with every poll
    identify: tuple[IdentifySpec, ...] = ()  # model-code registers a bus scan reads


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One code of an object map: the channel it is, the unit its numbers are in when the telegram
    states none, whether it counts up, and a factor for codes that send scaled integers."""

    code: str  # "1-0:1.8.0" (OBIS), "VIF:0x13" (M-Bus), as the driver reports it
    channel: Channel
    unit: str = ""  # the device's unit, converted to the channel's canonical unit
    kind: Kind = Kind.INSTANTANEOUS
    scale: float = 1.0

    def __post_init__(self) -> None:
        conversion_factor(self.unit, self.channel)  # ValueError names the unit and the channel


@dataclass(frozen=True, slots=True)
class ObjectMap:
    """The codes a family of meters sends that the gateway reads, each with its channel (codes not
    listed are not readings: equipment ids, tariff indicators, logs). The data-file shape of the
    DLMS, M-Bus, P1 and SML maps, as profiles are Modbus's::

        name = "dsmr5"
        [[objects]]
        code = "1-0:1.8.0"
        channel = "energy_import"
        unit = "kWh"
        kind = "cumulative"
    """

    name: str
    objects: tuple[ObjectSpec, ...]
    _by_code: dict[str, ObjectSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_code: dict[str, ObjectSpec] = {}
        for spec in self.objects:
            if spec.code in by_code:
                msg = f"object map {self.name}: code {spec.code!r} is listed twice"
                raise ValueError(msg)
            by_code[spec.code] = spec
        object.__setattr__(self, "_by_code", by_code)

    def get(self, code: str) -> ObjectSpec | None:
        return self._by_code.get(code)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ObjectMap:
        """A map from its data file's content (parsed TOML or JSON); ValueError naming the entry and
        key that is wrong."""
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            msg = "object map: 'name' must be a non-empty string"
            raise ValueError(msg)
        entries = doc.get("objects", [])
        if not isinstance(entries, list):
            msg = f"object map {name}: 'objects' must be a list of tables"
            raise ValueError(msg)
        specs = []
        for i, entry in enumerate(entries):
            where = f"object map {name}: objects[{i}]"
            if not isinstance(entry, Mapping):
                msg = f"{where} must be a table"
                raise ValueError(msg)
            unknown = set(entry) - {"code", "channel", "unit", "kind", "scale"}
            if unknown:
                msg = f"{where}: unknown key(s) {', '.join(sorted(unknown))}"
                raise ValueError(msg)
            try:
                specs.append(ObjectSpec(code=str(entry["code"]), channel=Channel(entry["channel"]),
                                        unit=str(entry.get("unit", "")), kind=Kind(entry.get("kind", "instantaneous")),
                                        scale=float(entry.get("scale", 1.0))))
            except KeyError as exc:
                msg = f"{where}: {exc.args[0]!r} is missing"
                raise ValueError(msg) from None
            except (TypeError, ValueError) as exc:
                msg = f"{where}: {exc}"
                raise ValueError(msg) from None
        return cls(name, tuple(specs))
