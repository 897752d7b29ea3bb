"""DSMR P1 telegrams: framing on a byte stream, the CRC, and the OBIS lines as (code, value, unit).

A telegram runs from "/" (the identification line) to "!" and, from DSMR 4 on, four hex digits of
CRC16/ARC over everything from "/" to "!" inclusive. One decoder serves DSMR 2.2-5.0 and the
Belgian, Luxembourg, Austrian, Irish and Hungarian variants, because all of them write lines the
same way: ``A-B:C.D.E(v1)(v2)...``. Codes are kept as the meter sends them; which of them are
readings is the object map's business (gateway/profiles/objects/dsmr_p1.toml).

Why not dsmr-parser's TelegramParser at run time: it runs one regex per known object over the whole
telegram (2.5 ms per DSMR 5 telegram here, a quarter of a core at 100 meters sending every second,
the issue's target being under a fifth) and keeps objects by name, not by OBIS code, dropping lines
its per-version table does not know. Its parser is the independent oracle of tests/drivers/p1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from gateway.model.samples import ObjectValue

#: Telegrams have no stated upper size; DSMR 5 with four M-Bus devices stays under 3 kB.
MAX_TELEGRAM = 8192

def _table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_CRC_TABLE: tuple[int, ...] = _table()


def crc16(data: bytes) -> int:
    """CRC16/ARC (poly 0x8005 reflected, init 0), as DSMR 4+ writes after the "!"."""
    crc = 0
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


class P1Error(Exception):
    """A telegram that cannot be read: `reason` is the dead letter's reason (crc, truncated, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- framing -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Chunk:
    """What the framer found: a telegram, or bytes that are none (`reason` says why)."""

    data: bytes
    reason: str | None = None  # None: a telegram; "garbage" | "truncated" | "oversize"


class P1Framer:
    """Cuts a byte stream into telegrams. Bytes outside a telegram (line noise, a half telegram
    at connect) are handed out as garbage or truncated chunks, never silently dropped."""

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = MAX_TELEGRAM) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[Chunk]:
        self._buf += data
        out: list[Chunk] = []
        buf = self._buf
        while buf:
            found = _START.search(buf)
            if found is None:
                if not buf.strip(b"\r\n\x00 "):
                    buf.clear()
                elif len(buf) > self.max_size or b"\n" in buf:
                    out.append(Chunk(bytes(buf), _lead_reason(buf)))
                    buf.clear()
                break
            start = found.start()
            if start > 0:
                lead = bytes(buf[:start])
                del buf[:start]
                if lead.strip(b"\r\n\x00 "):
                    out.append(Chunk(lead, _lead_reason(lead)))
            end = buf.find(b"!", 1)
            # A new identification line before the "!": the telegram before it was cut off.
            restart = _START.search(buf, 1)
            if restart is not None and (end < 0 or restart.start() < end):
                out.append(Chunk(bytes(buf[:restart.start()]), "truncated"))
                del buf[:restart.start()]
                continue
            if end < 0:
                if len(buf) > self.max_size:
                    out.append(Chunk(bytes(buf), "oversize"))
                    buf.clear()
                break
            eol = buf.find(b"\n", end)
            if eol < 0:
                if len(buf) - end > 8:  # "!" + 4 hex + CRLF, and a little slack
                    out.append(Chunk(bytes(buf[:end + 1]), "truncated"))
                    del buf[:end + 1]
                    continue
                break
            out.append(Chunk(bytes(buf[:eol + 1])))
            del buf[:eol + 1]
        return out


def _lead_reason(lead: bytes | bytearray) -> str:
    """Bytes outside a telegram: the tail of one whose start we missed (it has OBIS lines), or noise."""
    return "truncated" if _LINE.search(lead) else "garbage"


# -- decoding ------------------------------------------------------------------------------------

#: The identification line that starts a telegram: "/" + three letters of the maker + a digit.
_START = re.compile(rb"/[A-Za-z]{3}[0-9]")
#: An OBIS line: its code, then one or more "(...)" groups, possibly over several lines (DSMR 2.2's gas).
_LINE = re.compile(rb"(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:\*\d{1,3})?)((?:\s*\([^()\r\n]*\))+)")
_GROUP = re.compile(rb"\(([^()\r\n]*)\)")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_TST = re.compile(r"(\d{12})([SW]?)")
#: The zone of DSMR timestamps without the S/W suffix (DSMR 2.2/3 gas): the Dutch/Belgian grid's.
LOCAL = ZoneInfo("Europe/Amsterdam")
_SUMMER = timezone(timedelta(hours=2))
_WINTER = timezone(timedelta(hours=1))
#: Vacant M-Bus channels report 1970-01-01: no reading.
_EPOCH_YEAR = 2000


@dataclass(frozen=True, slots=True)
class Telegram:
    """A decoded telegram: the electricity meter's values at `ts` (None: the telegram has no clock),
    each M-Bus channel's values at their own capture time, and its equipment id."""

    ident: str
    ts: datetime | None
    values: tuple[ObjectValue, ...]
    mbus: tuple[tuple[int, datetime, tuple[ObjectValue, ...]], ...]
    equipment_id: str | None


def tst(text: str) -> datetime | None:
    """A DSMR timestamp YYMMDDhhmmss[S|W] as UTC; S is CEST, W CET, neither the local zone's."""
    m = _TST.fullmatch(text)
    if m is None:
        return None
    digits, season = m.groups()
    try:
        naive = datetime.strptime(digits, "%y%m%d%H%M%S")
    except ValueError:
        return None
    zone = _SUMMER if season == "S" else _WINTER if season == "W" else LOCAL
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _value(text: str) -> tuple[Decimal | str, str | None]:
    """"000123.456*kWh" -> (Decimal("123.456"), "kWh"): the digits the meter shows, its unit."""
    number, _, unit = text.partition("*")
    if _NUMBER.fullmatch(number):
        try:
            return Decimal(number), unit or None  # leading zeros go, decimals stay: 0123.450 is 123.450
        except InvalidOperation:
            pass
    return text, None


def check_crc(raw: bytes, required: bool = False) -> None:
    """P1Error("crc") unless the hex digits after "!" are the CRC. DSMR 2.2/3 send none; from DSMR 4
    on (`required`) a telegram without one is cut off before its end."""
    bang = raw.rfind(b"!")
    tail = raw[bang + 1:].strip()
    if not tail:
        if required:
            raise P1Error("crc", "no CRC after '!' (DSMR 4 and later always send one)")
        return
    try:
        stated = int(tail, 16)
    except ValueError:
        raise P1Error("crc", f"CRC field {tail[:8]!r} is not hex") from None
    if len(tail) > 4:
        raise P1Error("crc", f"CRC field {tail[:8]!r} is longer than 4 hex digits")
    actual = crc16(raw[:bang + 1])
    if actual != stated:
        raise P1Error("crc", f"CRC {stated:04X} stated, {actual:04X} computed")


def decode(raw: bytes, require_crc: bool = False) -> Telegram:
    """One framed telegram (from "/" to the line after "!"); P1Error when its CRC fails or it is not
    a telegram. Lines of several groups that are not an M-Bus reading (logs, profiles) are kept
    whole as text."""
    check_crc(raw, require_crc)
    try:
        text_ident = raw[1:raw.index(b"\n")].strip().decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise P1Error("decode", "no readable identification line") from None
    values: list[ObjectValue] = []
    mbus: dict[int, tuple[datetime, list[ObjectValue]]] = {}
    ts = equipment = None
    for m in _LINE.finditer(raw):
        code = m.group(1).decode("ascii")
        groups = [g.decode("ascii", errors="replace") for g in _GROUP.findall(m.group(2))]
        if code.endswith("*255"):
            code = code[:-4]
        a, _, rest = code.partition(":")
        if len(groups) == 1:
            # Equipment ids (0-n:96.1.x) stay text: "0A01..." or "00000000000000" are no numbers.
            value, unit = (groups[0], None) if ":96.1." in code else _value(groups[0])
            if code == "0-0:1.0.0":
                ts = tst(groups[0])
                continue
            if code == "0-0:96.1.1" or code == "0-0:96.1.0":
                equipment = groups[0]
            values.append((code, value, unit))
        elif rest.startswith("24.") and len(groups) in (2, 7):
            # An M-Bus device's value with its own capture time: DSMR 4/5 "(TST)(value*unit)",
            # DSMR 2.2/3 "(TST)(..)(..)(..)(code)(unit)" followed by "(value)" on the next line.
            if len(groups) == 2:
                when, (value, unit) = tst(groups[0]), _value(groups[1])
            else:
                when, (value, _), unit, code = tst(groups[0]), _value(groups[6]), groups[5] or None, groups[4]
            channel = int(a.split("-")[1]) if "-" in a else 0
            if when is None or when.year < _EPOCH_YEAR or isinstance(value, str):
                continue
            mbus.setdefault(channel, (when, []))[1].append((code, value, unit))
        else:
            values.append((code, " ".join(f"({g})" for g in groups), None))
    values.extend(_derived(values))
    return Telegram(text_ident, ts, tuple(values),
                    tuple((ch, when, tuple(vals)) for ch, (when, vals) in sorted(mbus.items())), equipment)


def _derived(values: list[ObjectValue]) -> list[ObjectValue]:
    """Totals DSMR does not send, from what it does, exactly: energy over both tariffs (1.8.0/2.8.0,
    which Belgian meters send themselves) and net power (16.7.0 = 1.7.0 - 2.7.0, as SML meters
    send it), so a P1 meter has the same channels as the others."""
    by_code = {code: (v, u) for code, v, u in values if isinstance(v, Decimal)}
    out: list[ObjectValue] = []
    for total, parts in (("1-0:1.8.0", ("1-0:1.8.1", "1-0:1.8.2")), ("1-0:2.8.0", ("1-0:2.8.1", "1-0:2.8.2"))):
        found = [by_code[p] for p in parts if p in by_code]
        if total not in by_code and len(found) == len(parts) and len({u for _, u in found}) == 1:
            out.append((total, sum((v for v, _ in found), Decimal(0)), found[0][1]))
    imp, exp = by_code.get("1-0:1.7.0"), by_code.get("1-0:2.7.0")
    if "1-0:16.7.0" not in by_code and imp is not None and (exp is None or imp[1] == exp[1]):
        out.append(("1-0:16.7.0", imp[0] - (exp[0] if exp is not None else 0), imp[1]))  # no 2.7.0: no export
    return out


__all__ = ["MAX_TELEGRAM", "Chunk", "P1Error", "P1Framer", "Telegram", "check_crc", "crc16", "decode", "tst"]
