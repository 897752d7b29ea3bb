"""M-Bus application layer (EN 13757-3): an RSP_UD's user data -> a `Telegram` of `Record`s.

Our own decoder (not pymeterbus): it is one small table-driven module that gives exact Decimals
(the integer times 10^n, never a float), keeps storage number, tariff, subunit and function per
record, keeps manufacturer-specific data as bytes, and fails with a `FrameError` that says which
byte of which record is wrong. Checked against libmbus's recorded frames (tests/drivers/mbus).

A record's `code` is what object maps list (gateway/profiles/objects/mbus_*.toml):

    <quantity>[:max|:min|:err][/t<tariff>][/u<subunit>][~<vife hex>...]

e.g. "volume", "energy/t1", "volume_flow:max", "power~3b". The storage number is not part of it:
a record of storage n > 0 is the same quantity at an earlier time (a due-day value), and the
driver emits it as a reading with that time (see `Telegram.by_storage`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np

from drivers.mbus.frame import CI_FIXED, CI_VARIABLE, FrameError
from drivers.mbus.vif import Quantity, combinable, first_extension, primary, second_extension

FUNCTIONS = ("", ":max", ":min", ":err")
CI_ERROR = 0x70  # RSP_UD: report of a general application error
_APP_ERRORS = {0: "unspecified error", 1: "unimplemented CI", 2: "buffer too long, truncated",
               3: "too many records", 4: "premature end of record", 5: "more than 10 DIFEs",
               6: "more than 10 VIFEs", 8: "application busy", 9: "too many readouts"}
#: Bytes of data per DIF data field code (None: variable length or special).
_LENGTHS = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, None)
_MAX_DIFE = 10
_MAX_VIFE = 10
Value = Decimal | str | datetime | date | None


@dataclass(frozen=True, slots=True)
class Record:
    dif: int
    difes: tuple[int, ...]
    vif: int
    vifes: tuple[int, ...]
    storage: int
    tariff: int
    subunit: int
    function: int  # 0 instantaneous, 1 maximum, 2 minimum, 3 value during error state
    quantity: Quantity
    qualifiers: tuple[int, ...]  # combinable VIFEs that change the record's meaning
    value: Value  # Decimal scaled to `quantity.unit`; str for text; None: no data (or unreadable BCD)
    data: bytes  # the data field as sent
    problem: str = ""  # why value is None although data was sent

    @property
    def code(self) -> str:
        out = self.quantity.name + FUNCTIONS[self.function]
        if self.tariff:
            out += f"/t{self.tariff}"
        if self.subunit:
            out += f"/u{self.subunit}"
        return out + "".join(f"~{q:02x}" for q in self.qualifiers)


@dataclass(frozen=True, slots=True)
class Telegram:
    """One RSP_UD: the slave's header (variable data structure) and its records."""

    ci: int
    ident: str  # the 8-digit identification number (secondary address), as BCD digits
    manufacturer: str  # three letters (EN 62056-21 flag), "" in fixed structure
    version: int
    medium: int
    access: int
    status: int
    records: tuple[Record, ...]
    manufacturer_data: bytes = b""
    more: bool = False  # DIF 0x1F: the slave has more records in a next telegram
    special: int = 0  # the DIF that ended the records: 0x0F manufacturer data, 0x1F more follow; 0 none

    def secondary(self) -> str:
        """The 16-hex-digit secondary address: id, manufacturer, version, medium."""
        man = _man_code(self.manufacturer)
        return f"{self.ident}{man:04X}{self.version:02X}{self.medium:02X}"


def _man_code(letters: str) -> int:
    if len(letters) != 3:
        return 0xFFFF
    a, b, c = (ord(x) - 64 for x in letters)
    return (a << 10) | (b << 5) | c


def manufacturer(code: int) -> str:
    return "".join(chr(((code >> s) & 0x1F) + 64) for s in (10, 5, 0))


def bcd_digits(data: bytes) -> str:
    """BCD digits, least significant byte first, as a string ('F' nibbles and others kept)."""
    return "".join(f"{b:02X}" for b in reversed(data))


def _bcd(data: bytes) -> Decimal | None:
    digits = bcd_digits(data)
    negative = digits.startswith("F")  # EN 13757-3 type A: a leading F nibble is the minus sign
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        return None
    value = Decimal(int(digits)) if digits else Decimal(0)
    return -value if negative else value


def _int(data: bytes) -> Decimal:
    return Decimal(int.from_bytes(data, "little", signed=True))


def _year(low: int, high: int) -> int:
    year = ((low & 0xE0) >> 5) | ((high & 0xF0) >> 1)
    return 2000 + year if year < 81 else 1900 + year  # libmbus' and the meters' century rule


def _date_g(data: bytes) -> date | str:
    day, month, year = data[0] & 0x1F, data[1] & 0x0F, _year(data[0], data[1])
    try:
        return date(year, month, day)
    except ValueError:
        return f"{year:04d}-{month:02d}-{day:02d}"  # 2000-00-00: the meter has none yet


def _datetime(data: bytes) -> datetime | str:
    """Type F (4 bytes) or type I (6 bytes, with seconds): naive, the meter's local time as it shows it
    (the driver knows the meters' zone, [mbus] meter_timezone)."""
    second, data = (data[0] & 0x3F, data[1:]) if len(data) == 6 else (0, data)
    minute, hour, day, month = data[0] & 0x3F, data[1] & 0x1F, data[2] & 0x1F, data[3] & 0x0F
    year = _year(data[2], data[3])
    invalid = bool(data[0] & 0x80)
    try:
        if invalid:
            raise ValueError
        return datetime(year, month, day, hour, minute, second)  # naive: local to the meter
    except ValueError:
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d} (invalid)"


def _value(code: int, data: bytes, quantity: Quantity, factor: Decimal) -> tuple[Value, str]:
    if not data:
        return None, ""
    if quantity.name == "date" and code == 2:
        return _date_g(data), ""
    if quantity.name == "datetime" and code in (4, 6):
        return _datetime(data), ""
    if code == 5:
        number = float(np.frombuffer(data, "<f4")[0])
        # The float32's shortest decimal: what the meter computed, not float64 noise.
        return Decimal(str(np.float32(number))) * factor, ""
    if code in (9, 10, 11, 12, 14):
        bcd = _bcd(data)
        if bcd is None:
            return None, f"BCD {bcd_digits(data)} has non-decimal digits"
        return bcd * factor, ""
    return _int(data) * factor, ""


class _Reader:
    """A cursor over user data whose reads fail with the byte offset, never IndexError."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if self.left() < n:
            raise FrameError(self.where, f"premature end of data: {what} needs {n} byte(s) at offset {self.pos}, "
                             f"{self.left()} left", self.data)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]


def _chain(r: _Reader, first: int, what: str, limit: int) -> tuple[int, ...]:
    out: list[int] = []
    b = first
    while b & 0x80:
        if len(out) == limit:
            raise FrameError(r.where, f"more than {limit} {what}s at offset {r.pos}", r.data)
        b = r.byte(what)
        out.append(b)
    return tuple(out)


def _record(r: _Reader, dif: int) -> Record:
    difes = _chain(r, dif, "DIFE", _MAX_DIFE)
    storage, tariff, subunit = (dif >> 6) & 1, 0, 0
    for i, d in enumerate(difes):
        storage |= (d & 0x0F) << (1 + 4 * i)
        tariff |= ((d >> 4) & 0x03) << (2 * i)
        subunit |= ((d >> 6) & 0x01) << i
    vif = r.byte("VIF")
    text = ""
    if vif & 0x7F == 0x7C:  # plain-text unit: its length and ASCII (reversed) follow the VIF
        text = r.take(r.byte("plain-text VIF length"), "plain-text VIF")[::-1].decode("ascii", "replace")
    if vif in (0xFD, 0xFB):
        ext = r.byte("VIFE")
        quantity = first_extension(ext) if vif == 0xFD else second_extension(ext)
        vifes = (ext, *_chain(r, ext, "VIFE", _MAX_VIFE))
        rest = vifes[1:]
    else:
        quantity = primary(vif)
        vifes = _chain(r, vif, "VIFE", _MAX_VIFE)
        rest = vifes
    if text:
        quantity = Quantity(f"text:{text}", text)
    if quantity.name == "manufacturer":
        rest = ()  # a manufacturer-specific VIF's VIFEs are the manufacturer's too
    factor, qualifiers = combinable(rest)
    code = dif & 0x0F
    length = _LENGTHS[code]
    value: Value
    problem = ""
    if code == 0x0D:
        lvar = r.byte("LVAR")
        data = r.take(_lvar_length(lvar, r), "variable-length data")
        value, problem = _variable(lvar, data, quantity.factor * factor)
    else:
        assert length is not None  # 0x0F is handled by the caller
        data = r.take(length, f"data of DIF {dif:#04x}")
        value, problem = _value(code, data, quantity, quantity.factor * factor)
    return Record(dif, difes, vif, vifes, storage, tariff, subunit, (dif >> 4) & 0x03, quantity, qualifiers,
                  value, bytes(data), problem)


def _lvar_length(lvar: int, r: _Reader) -> int:
    if lvar <= 0xBF:
        return lvar
    if 0xC0 <= lvar <= 0xDF:
        return lvar & 0x0F
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    raise FrameError(r.where, f"LVAR {lvar:#04x} at offset {r.pos - 1} is reserved", r.data)


def _variable(lvar: int, data: bytes, factor: Decimal) -> tuple[Value, str]:
    if lvar <= 0xBF:
        return data[::-1].decode("latin-1"), ""
    if lvar <= 0xDF:
        bcd = _bcd(data)
        if bcd is None:
            return None, f"BCD {bcd_digits(data)} has non-decimal digits"
        return (bcd if lvar < 0xD0 else -bcd) * factor, ""
    return Decimal(int.from_bytes(data, "little", signed=False)) * factor, ""


def decode_records(data: bytes, where: str = "records") -> tuple[tuple[Record, ...], bytes, int]:
    """The data records of a variable data structure, then the manufacturer's data and the DIF
    that started it (0x0F; 0x1F: more records follow in a next telegram; 0: none)."""
    r = _Reader(data, where)
    records: list[Record] = []
    while r.left():
        dif = r.byte("DIF")
        if dif == 0x2F:  # idle filler
            continue
        if dif in (0x0F, 0x1F):
            return tuple(records), bytes(r.data[r.pos:]), dif
        if dif & 0x0F == 0x0F:  # 0x3F..0x6F reserved, 0x7F a master's global readout request
            raise FrameError(where, f"DIF {dif:#04x} at offset {r.pos - 1} is a special function a slave does "
                             "not send", data)
        records.append(_record(r, dif))
    return tuple(records), b"", 0


def decode(ci: int, data: bytes, where: str = "telegram") -> Telegram:
    """A RSP_UD's user data after CI; FrameError for a CI this decoder does not read, a header too
    short, or a record that runs past the end."""
    if ci == CI_VARIABLE:
        if len(data) < 12:
            raise FrameError(where, f"variable data header needs 12 bytes, got {len(data)}", data)
        ident = bcd_digits(data[0:4])
        man = manufacturer(int.from_bytes(data[4:6], "little"))
        records, mfr, special = decode_records(data[12:], where)
        return Telegram(ci, ident, man, data[6], data[7], data[8], data[9], records, mfr, special == 0x1F, special)
    if ci == CI_ERROR:
        code = data[0] if data else 0
        raise FrameError(where, f"the slave reports an application error: {code} "
                         f"({_APP_ERRORS.get(code, 'reserved')})", data)
    if ci in CI_FIXED:
        return _fixed(ci, data, where)
    raise FrameError(where, f"CI {ci:#04x} is not a response this decoder reads (0x72 variable, 0x73/0x77 fixed)",
                     data)


def _fixed(ci: int, data: bytes, where: str) -> Telegram:
    """Fixed data structure (EN 1434-3 old meters): id, access, status, medium/units, two counters."""
    if len(data) != 16:
        raise FrameError(where, f"fixed data structure has 16 bytes, got {len(data)}", data)
    ident = bcd_digits(data[0:4])
    status = data[5]
    bcd = not status & 0x80  # bit 7 of the status: counters are binary, else BCD
    counters = []
    for i, chunk in enumerate((data[8:12], data[12:16])):
        # The units of the fixed structure are a table of their own (EN 1434-3); kept as a code,
        # the counter as sent: no object map reads these old meters yet.
        unit = Quantity(f"counter{i + 1}_unit_{data[6 + i] & 0x3F:#04x}", "")
        value = _bcd(chunk) if bcd else Decimal(struct.unpack("<I", chunk)[0])
        problem = "" if value is not None else f"BCD {bcd_digits(chunk)} has non-decimal digits"
        counters.append(Record(0, (), 0, (), i, 0, 0, 0, unit, (), value, bytes(chunk), problem))
    medium = ((data[7] & 0xC0) >> 4) | ((data[6] & 0xC0) >> 6)
    return Telegram(ci, ident, "", 0, medium, data[4], status, tuple(counters))


__all__ = ["FUNCTIONS", "Record", "Telegram", "bcd_digits", "decode", "decode_records", "manufacturer"]
