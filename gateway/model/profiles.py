"""Modbus device profiles (register maps) as data. Loaded by gateway.config.profiles."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.model.meters import Utility
from gateway.model.readings import Channel, Kind


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
