"""Register words + RegisterSpec -> number. A data table, not a chain of ifs."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.model.profiles import ByteOrder, DataType, FlagSpec, Function, RegisterSpec

# struct code of each type, always decoded big-endian after reordering the bytes to ABCD.
_STRUCT: dict[DataType, struct.Struct] = {
    DataType.INT16: struct.Struct(">h"),
    DataType.UINT16: struct.Struct(">H"),
    DataType.INT32: struct.Struct(">i"),
    DataType.UINT32: struct.Struct(">I"),
    DataType.INT64: struct.Struct(">q"),
    DataType.UINT64: struct.Struct(">Q"),
    DataType.FLOAT32: struct.Struct(">f"),
    DataType.FLOAT64: struct.Struct(">d"),
}


class NotAvailable(ValueError):
    """The register holds the device's "no value" marker (e.g. all ones)."""


class Located(Protocol):
    """Anything that lives at some registers: a RegisterSpec or a FlagSpec."""

    @property
    def function(self) -> Function: ...
    @property
    def address(self) -> int: ...
    @property
    def words(self) -> int: ...


#: Words -> bytes, big-endian words (">") or byte-swapped words ("<"), by word count.
_BIG = {n: struct.Struct(f">{n}H") for n in (1, 2, 4)}
_SWAPPED = {n: struct.Struct(f"<{n}H") for n in (1, 2, 4)}


#: The numpy type of each register type, big-endian as the words are read (frames decode with it).
NUMPY_TYPE: dict[DataType, str] = {
    DataType.INT16: ">i2", DataType.UINT16: ">u2", DataType.INT32: ">i4", DataType.UINT32: ">u4",
    DataType.INT64: ">i8", DataType.UINT64: ">u8", DataType.FLOAT32: ">f4", DataType.FLOAT64: ">f8",
}


def to_abcd(words: Sequence[int], order: ByteOrder) -> bytes:
    """Bytes of `words` (as received, register order) rearranged to big-endian ABCD."""
    n = len(words)
    big, swapped = _BIG.get(n) or struct.Struct(f">{n}H"), _SWAPPED.get(n) or struct.Struct(f"<{n}H")
    match order:
        case ByteOrder.ABCD:
            return big.pack(*words)
        case ByteOrder.CDAB:  # low word first, big-endian words
            return big.pack(*reversed(words))
        case ByteOrder.BADC:  # high word first, bytes of each word swapped
            return swapped.pack(*words)
        case ByteOrder.DCBA:  # fully little endian
            return swapped.pack(*reversed(words))


def decode_number(words: Sequence[int], spec: RegisterSpec) -> int | float:
    """The register's number as the device holds it (int or float), before scale and offset."""
    if len(words) != spec.words:
        msg = f"{spec.type.value} needs {spec.words} registers, got {len(words)}"
        raise ValueError(msg)
    number: int | float = _STRUCT[spec.type].unpack(to_abcd(words, spec.order))[0]
    return number


def decode_raw(words: Sequence[int], spec: RegisterSpec) -> float:
    """The register's number before scale/offset/unit conversion."""
    return float(decode_number(words, spec))


def decode(words: Sequence[int], spec: RegisterSpec) -> float:
    """The value in the device's unit: raw * scale + offset.

    Raises NotAvailable when the words are the spec's "not available" marker, ValueError
    when their count is wrong.
    """
    number = decode_number(words, spec)
    if spec.not_available is not None and number == spec.not_available:
        shown = f"{number:#x}" if isinstance(number, int) else f"{number!r}"  # a float marker has no hex form
        msg = f"{spec.type.value} {shown} is the device's 'not available' marker"
        raise NotAvailable(msg)
    return float(number) * spec.scale + spec.offset


def flag_raised(word: int, flag: FlagSpec) -> bool:
    """Whether a status word raises `flag` (its bit equals the flag's active value)."""
    return bool((word >> flag.bit) & 1) is flag.active


Layout = tuple[tuple[int, int, int], ...]  # (function code, start, count) of each block read


def place(spec: Located, layout: Layout) -> tuple[int, int]:
    """(index of the block holding the spec's words, offset into it); (-1, 0) if none does."""
    code = spec.function.code
    for i, (fc, start, count) in enumerate(layout):
        if fc == code and start <= spec.address and spec.address + spec.words <= start + count:
            return i, spec.address - start
    return -1, 0


def words_for(spec: Located, blocks: Mapping[tuple[int, int], Sequence[int]]) -> tuple[int, ...] | None:
    """Slice the spec's words out of the blocks read ({(function code, start): words})."""
    code = spec.function.code
    for (fc, start), words in blocks.items():
        if fc == code and start <= spec.address and spec.address + spec.words <= start + len(words):
            off = spec.address - start
            return tuple(words[off : off + spec.words])
    return None
