"""A-XDR encoding of COSEM data (IEC 62056-6-2 §4.1.5, DLMS UA Blue Book): the few types a meter answers with.

The simulator writes its own answers byte by byte rather than through dlms-cosem's data classes: the encoders
below are plain functions over ints and bytes, cheap enough for a fleet of 500 meters in one process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

NULL = b"\x00"


class AxdrError(ValueError):
    """Bytes that are not the A-XDR data the request should carry (what and at which offset)."""


def length(n: int) -> bytes:
    """A-XDR variable length: one byte below 128, else 0x8k and k big-endian bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def array(items: list[bytes]) -> bytes:
    return b"\x01" + length(len(items)) + b"".join(items)


def structure(*items: bytes) -> bytes:
    return b"\x02" + length(len(items)) + b"".join(items)


def boolean(value: bool) -> bytes:
    return b"\x03\xff" if value else b"\x03\x00"


def bit_string(bits: str) -> bytes:
    """'0101...' most significant bit first, as the standard writes them."""
    padded = bits.ljust((len(bits) + 7) // 8 * 8, "0")
    return b"\x04" + length(len(bits)) + int(padded or "0", 2).to_bytes(len(padded) // 8, "big")


def double_long(v: int) -> bytes:
    return b"\x05" + v.to_bytes(4, "big", signed=True)


def double_long_unsigned(v: int) -> bytes:
    return b"\x06" + v.to_bytes(4, "big")


def octet_string(v: bytes) -> bytes:
    return b"\x09" + length(len(v)) + v


def visible_string(v: str) -> bytes:
    raw = v.encode("ascii")
    return b"\x0a" + length(len(raw)) + raw


def integer(v: int) -> bytes:
    return b"\x0f" + v.to_bytes(1, "big", signed=True)


def long(v: int) -> bytes:
    return b"\x10" + v.to_bytes(2, "big", signed=True)


def unsigned(v: int) -> bytes:
    return b"\x11" + v.to_bytes(1, "big")


def long_unsigned(v: int) -> bytes:
    return b"\x12" + v.to_bytes(2, "big")


def long64(v: int) -> bytes:
    return b"\x14" + v.to_bytes(8, "big", signed=True)


def long64_unsigned(v: int) -> bytes:
    return b"\x15" + v.to_bytes(8, "big")


def enum(v: int) -> bytes:
    return b"\x16" + v.to_bytes(1, "big")


def scaler_unit(scaler: int, unit: int) -> bytes:
    return structure(integer(scaler), enum(unit))


def cosem_datetime(when: dt.datetime) -> bytes:
    """The 12-octet date-time (Blue Book 4.1.6.1) in UTC: deviation 0, clock status 0."""
    when = when.astimezone(dt.UTC)
    return (when.year.to_bytes(2, "big") + bytes([when.month, when.day, when.isoweekday(), when.hour,
                                                  when.minute, when.second, when.microsecond // 10_000])
            + b"\x00\x00\x00")


def parse_cosem_datetime(raw: bytes) -> dt.datetime:
    """A 12-octet date-time back to an aware UTC datetime; 'not specified' fields (0xFF) read as 0."""
    if len(raw) != 12:
        raise AxdrError(f"date-time is 12 octets, got {len(raw)}: {raw.hex()}")
    year = int.from_bytes(raw[0:2], "big")
    month, day, hour, minute, second, hundredths = raw[2], raw[3], raw[5], raw[6], raw[7], raw[8]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)

    def spec(v: int) -> int:
        return 0 if v == 0xFF else v

    try:
        local = dt.datetime(year, month, day, spec(hour), spec(minute), spec(second), spec(hundredths) * 10_000,
                            tzinfo=dt.UTC)
    except ValueError as exc:
        raise AxdrError(f"date-time {raw.hex()}: {exc}") from None
    # Blue Book 4.1.6.1: deviation is the minutes from local time to UTC (UTC+01:00 is -60); 0x8000: unknown
    return local if deviation == -0x8000 else local + dt.timedelta(minutes=deviation)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded Data value: its A-XDR tag and the Python value (list for array/structure)."""

    tag: int
    value: object


_FIXED = {0x03: 1, 0x05: 4, 0x06: 4, 0x0F: 1, 0x10: 2, 0x11: 1, 0x12: 2, 0x14: 8, 0x15: 8, 0x16: 1, 0x17: 4,
          0x18: 8, 0x19: 12, 0x1A: 5, 0x1B: 4}
_SIGNED = {0x05, 0x0F, 0x10, 0x14}


def _length_at(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise AxdrError(f"length expected at offset {pos}, data ends")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    k = first & 0x7F
    if k == 0 or k > 4 or pos + 1 + k > len(data):
        raise AxdrError(f"bad length 0x{first:02x} at offset {pos}")
    return int.from_bytes(data[pos + 1:pos + 1 + k], "big"), pos + 1 + k


def decode(data: bytes, pos: int = 0, depth: int = 0) -> tuple[Decoded, int]:
    """Decode one Data value at pos; returns it and the offset after it. Raises AxdrError on bad bytes."""
    if depth > 8:
        raise AxdrError(f"data nested deeper than 8 at offset {pos}")
    if pos >= len(data):
        raise AxdrError(f"data expected at offset {pos}, the request ends")
    tag = data[pos]
    pos += 1
    if tag == 0x00:
        return Decoded(tag, None), pos
    if tag in (0x01, 0x02):
        count, pos = _length_at(data, pos)
        items: list[Decoded] = []
        for _ in range(count):
            item, pos = decode(data, pos, depth + 1)
            items.append(item)
        return Decoded(tag, items), pos
    if tag in (0x09, 0x0A, 0x0C):
        n, pos = _length_at(data, pos)
        if pos + n > len(data):
            raise AxdrError(f"string of {n} octets at offset {pos} runs past the end ({len(data)})")
        raw = data[pos:pos + n]
        return Decoded(tag, raw.decode("ascii", "replace") if tag == 0x0A else raw), pos + n
    if tag == 0x04:
        bits, pos = _length_at(data, pos)
        n = (bits + 7) // 8
        return Decoded(tag, data[pos:pos + n]), pos + n
    size = _FIXED.get(tag)
    if size is None or pos + size > len(data):
        raise AxdrError(f"unknown or truncated data type 0x{tag:02x} at offset {pos - 1}")
    raw = data[pos:pos + size]
    if tag == 0x03:
        return Decoded(tag, raw != b"\x00"), pos + size
    if tag in (0x17, 0x18, 0x19, 0x1A, 0x1B):
        return Decoded(tag, raw), pos + size
    return Decoded(tag, int.from_bytes(raw, "big", signed=tag in _SIGNED)), pos + size
