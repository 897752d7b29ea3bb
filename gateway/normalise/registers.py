"""Register words + RegisterSpec -> number. A data table, not a chain of ifs."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from gateway.model.profiles import ByteOrder, DataType, RegisterSpec

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


def to_abcd(words: tuple[int, ...] | list[int], order: ByteOrder) -> bytes:
    """Bytes of `words` (as received, register order) rearranged to big-endian ABCD."""
    match order:
        case ByteOrder.ABCD:
            return b"".join(w.to_bytes(2, "big") for w in words)
        case ByteOrder.CDAB:  # low word first, big-endian words
            return b"".join(w.to_bytes(2, "big") for w in reversed(words))
        case ByteOrder.BADC:  # high word first, bytes of each word swapped
            return b"".join(w.to_bytes(2, "little") for w in words)
        case ByteOrder.DCBA:  # fully little endian
            return b"".join(w.to_bytes(2, "little") for w in reversed(words))


def decode_raw(words: tuple[int, ...] | list[int], spec: RegisterSpec) -> float:
    """The register's number before scale/offset/unit conversion."""
    if len(words) != spec.words:
        msg = f"{spec.type.value} needs {spec.words} registers, got {len(words)}"
        raise ValueError(msg)
    return float(_STRUCT[spec.type].unpack(to_abcd(words, spec.order))[0])


def decode(words: tuple[int, ...] | list[int], spec: RegisterSpec) -> float:
    """The value in the device's unit: raw * scale + offset."""
    return decode_raw(words, spec) * spec.scale + spec.offset


def words_for(spec: RegisterSpec, blocks: Mapping[tuple[int, int], tuple[int, ...]]) -> tuple[int, ...] | None:
    """Slice the spec's words out of the blocks read ({(function code, start): words})."""
    code = spec.function.code
    for (fc, start), words in blocks.items():
        if fc == code and start <= spec.address and spec.address + spec.words <= start + len(words):
            off = spec.address - start
            return tuple(words[off : off + spec.words])
    return None
