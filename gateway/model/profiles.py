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

    @property
    def words(self) -> int:
        return self.type.words


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
