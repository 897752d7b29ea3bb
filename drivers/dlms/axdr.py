"""A-XDR data (IEC 62056-6-2 §9.5, the `Data` CHOICE) -> plain Python values, strictly.

Our own small decoder rather than dlms-cosem's parser: a meter's answer is untrusted input, so a
truncated or unknown encoding must end in one typed error (`DataError`, with the offset) that the
driver dead-letters, never in whatever exception a general parser happens to raise. Values:
null -> None, boolean -> bool, the integer types and enum -> int, octet-string -> bytes,
visible/utf8-string -> str, bit-string -> str of '0'/'1', float32/float64 -> Decimal (float32 as
the shortest decimal that reads back as it: what the meter's display shows), array and structure
-> tuple, date-time/date/time -> `DateTimeBytes` (decoded by the clock module).
"""

from __future__ import annotations

import struct
from decimal import Decimal

#: Nesting a meter's answer may have (a profile buffer is array -> structure -> values: 3).
MAX_DEPTH = 8


class DataError(ValueError):
    """Bytes that are not A-XDR data: what is wrong and at which offset."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(f"A-XDR data at byte {offset}: {message}")


class DateTimeBytes(bytes):
    """A date-time (12 bytes), date (5) or time (4) as sent, tagged so it is not an octet-string."""


#: Fixed-size types: tag -> (size, struct format; "" for raw bytes kept).
_FIXED: dict[int, tuple[int, str]] = {
    3: (1, "?"), 5: (4, ">i"), 6: (4, ">I"), 15: (1, ">b"), 16: (2, ">h"), 17: (1, ">B"), 18: (2, ">H"),
    20: (8, ">q"), 21: (8, ">Q"), 22: (1, ">B"), 23: (4, ">f"), 24: (8, ">d"),
    25: (12, ""), 26: (5, ""), 27: (4, ""),
}
_NAMES = {0: "null-data", 1: "array", 2: "structure", 3: "boolean", 4: "bit-string", 5: "double-long",
          6: "double-long-unsigned", 9: "octet-string", 10: "visible-string", 12: "utf8-string", 13: "bcd",
          15: "integer", 16: "long", 17: "unsigned", 18: "long-unsigned", 19: "compact-array", 20: "long64",
          21: "long64-unsigned", 22: "enum", 23: "float32", 24: "float64", 25: "date-time", 26: "date", 27: "time"}

Value = None | bool | int | bytes | str | Decimal | tuple["Value", ...]


def type_name(tag: int) -> str:
    return _NAMES.get(tag, f"tag {tag}")


def decode(data: bytes) -> Value:
    """One Data value that fills `data` exactly; DataError otherwise."""
    value, end = decode_at(data, 0)
    if end != len(data):
        raise DataError(end, f"{len(data) - end} byte(s) after the value")
    return value


def decode_at(data: bytes, offset: int, depth: int = 0) -> tuple[Value, int]:
    """The Data value at `offset` and the offset after it."""
    if depth > MAX_DEPTH:
        raise DataError(offset, f"nested deeper than {MAX_DEPTH}")
    if offset >= len(data):
        raise DataError(offset, "truncated: a value was expected")
    tag = data[offset]
    offset += 1
    if tag == 0:
        return None, offset
    if tag in (1, 2):
        count, offset = length_at(data, offset)
        items = []
        for _ in range(count):
            item, offset = decode_at(data, offset, depth + 1)
            items.append(item)
        return tuple(items), offset
    if tag == 4:
        bits, offset = length_at(data, offset)
        size = (bits + 7) // 8
        raw = _take(data, offset, size, tag)
        return "".join(f"{b:08b}" for b in raw)[:bits], offset + size
    if tag in (9, 10, 12):
        size, offset = length_at(data, offset)
        raw = _take(data, offset, size, tag)
        if tag == 9:
            return bytes(raw), offset + size
        try:
            return raw.decode("ascii" if tag == 10 else "utf-8"), offset + size
        except UnicodeDecodeError as exc:
            raise DataError(offset, f"{type_name(tag)} is not text: {exc.reason}") from None
    if tag == 13:
        raw = _take(data, offset, 1, tag)
        return raw[0], offset + 1
    fixed = _FIXED.get(tag)
    if fixed is None:
        raise DataError(offset - 1, f"unsupported or unknown data type {type_name(tag)}")
    size, fmt = fixed
    raw = _take(data, offset, size, tag)
    if not fmt:
        return DateTimeBytes(raw), offset + size
    (number,) = struct.unpack(fmt, raw)
    if tag == 23:
        return shortest_float32(number), offset + size
    if tag == 24:
        return Decimal(repr(number)), offset + size
    return number, offset + size


def length_at(data: bytes, offset: int) -> tuple[int, int]:
    """A variable-length integer (X.690 style: < 0x80 itself, else 0x8n and n bytes)."""
    first = _take(data, offset, 1, -1)[0]
    if first < 0x80:
        return first, offset + 1
    n = first & 0x7F
    if not 1 <= n <= 4:
        raise DataError(offset, f"length of {n} bytes")
    raw = _take(data, offset + 1, n, -1)
    return int.from_bytes(raw, "big"), offset + 1 + n


def _take(data: bytes, offset: int, size: int, tag: int) -> bytes:
    if offset + size > len(data):
        what = "a length" if tag < 0 else type_name(tag)
        raise DataError(offset, f"truncated {what}: {size} byte(s) needed, {len(data) - offset} left")
    return data[offset:offset + size]


def shortest_float32(x: float) -> Decimal:
    """The shortest decimal that reads back as the same float32 (12345.599609375 -> 12345.6)."""
    if x != x or x in (float("inf"), float("-inf")):
        return Decimal(repr(x))
    packed = struct.pack(">f", x)
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.pack(">f", float(text)) == packed:
            return Decimal(text)
    return Decimal(repr(x))


__all__ = ["DataError", "DateTimeBytes", "Value", "decode", "decode_at", "length_at", "shortest_float32", "type_name"]
