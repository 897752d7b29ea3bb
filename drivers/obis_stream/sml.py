"""SML (Smart Message Language 1.04, the German meters' optical interface): framing on a byte
stream, the transport CRC, and each GetList.Res entry as (OBIS code, value, unit).

A transport frame is ``1b1b1b1b 01010101`` messages ``1b1b1b1b 1a PP CCCC``: PP bytes of padding,
CCCC the CRC16/X25 over the whole frame up to PP. Inside, four escape bytes are doubled. The
messages are decoded by pysml (MIT): its `SmlFrame` checks each message's own CRC and turns
valList entries into objName/unit/value with the scaler applied. The framing is ours, because
pysml's `find_frame` drops a frame whose CRC fails without saying so, and a bad frame must be
counted and dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sml as pysml

from drivers.obis_stream.p1 import Chunk
from gateway.model.samples import ObjectValue

ESC = b"\x1b\x1b\x1b\x1b"
START = ESC + b"\x01\x01\x01\x01"
#: A meter's frame is a few hundred bytes; a stream without an end marker this long is not SML.
MAX_FRAME = 8192


class SmlError(Exception):
    """A frame that cannot be read: `reason` is the dead letter's reason (crc, decode, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def crc16_x25(data: bytes) -> int:
    """CRC16/X25 as SML's transport writes it (big-endian in the frame): pysml's."""
    return int(pysml.Crc.crc16(data))


class SmlFramer:
    """Cuts a byte stream into transport frames, escape-aware; what lies between frames is garbage,
    a frame cut off by the next start is truncated."""

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[Chunk]:
        self._buf += data
        buf = self._buf
        out: list[Chunk] = []
        while True:
            start = buf.find(START)
            if start < 0:
                keep = len(START) - 1  # a start marker may be split across reads
                if len(buf) > keep:
                    lead = bytes(buf[:-keep])
                    if lead.strip(b"\x00"):
                        out.append(Chunk(lead, "garbage"))
                    del buf[:-keep]
                return out
            if start > 0:
                lead = bytes(buf[:start])
                del buf[:start]
                if lead.strip(b"\x00"):
                    out.append(Chunk(lead, "garbage"))
            end = self._end(buf)
            if end is None:
                if len(buf) > self.max_size:
                    out.append(Chunk(bytes(buf), "oversize"))
                    buf.clear()
                return out
            if end < 0:  # a new start inside: the frame before it was cut off
                cut = -end
                out.append(Chunk(bytes(buf[:cut]), "truncated"))
                del buf[:cut]
                continue
            out.append(Chunk(bytes(buf[:end])))
            del buf[:end]

    @staticmethod
    def _end(buf: bytearray) -> int | None:
        """The end of the frame at buf[0] (exclusive), -offset of a new start that cuts it, or None
        while it is incomplete."""
        i = len(START)
        while True:
            esc = buf.find(ESC, i)
            if esc < 0 or esc + 8 > len(buf):
                return None
            follow = bytes(buf[esc + 4:esc + 8])
            if follow == ESC:  # an escaped escape: data
                i = esc + 8
            elif follow[0] == 0x1A:
                return esc + 8
            elif follow == b"\x01\x01\x01\x01":
                return -esc
            else:  # an escape sequence SML does not define: the frame is broken here
                i = esc + 4


@dataclass(frozen=True, slots=True)
class SmlReadout:
    """A frame's GetList.Res values (every list in the frame), the server id, the sensor time
    when the meter sends a real clock (most send seconds since power-up: None)."""

    server_id: str | None
    ts: datetime | None
    values: tuple[ObjectValue, ...]


def decode(frame: bytes) -> SmlReadout:
    """One framed transport frame -> its values; SmlError when the CRC fails or it is no SML."""
    if len(frame) < 16 or frame[-8:-4] != ESC or frame[-4] != 0x1A:
        raise SmlError("truncated", "no end marker")
    padding = frame[-3]
    stated = int.from_bytes(frame[-2:], "big")
    actual = crc16_x25(frame[:-2])
    if stated != actual:
        raise SmlError("crc", f"CRC {stated:04X} stated, {actual:04X} computed")
    if padding > 3:
        raise SmlError("decode", f"padding {padding} > 3")
    body = frame[8:-8 - padding].replace(ESC + ESC, ESC)
    try:
        messages = pysml.SmlFrame(body)
    except pysml.SmlParserError as exc:
        # A message's own CRC (inside a frame whose transport CRC held) is a CRC failure too.
        raise SmlError("crc" if "CRC" in str(exc) else "decode", str(exc)) from None
    except Exception as exc:  # bitstring's read past the end, pysml's asserts: the frame is wrong
        raise SmlError("decode", f"{type(exc).__name__}: {exc}") from None
    values: list[ObjectValue] = []
    server = None
    ts = None
    for message in messages:
        body_ = message.get("messageBody")
        if isinstance(body_, pysml.SmlGetListResponse):
            server = server or _text(body_.get("serverId"))
            when = body_.get("actSensorTime")
            ts = when if isinstance(when, datetime) else ts
            values.extend(_entry(e) for e in body_.get("valList", ()) if e.get("objName"))
    return SmlReadout(server, ts, tuple(values))


def _entry(entry: Mapping[str, Any]) -> ObjectValue:
    code = str(entry["objName"])
    if code.endswith("*255"):
        code = code[:-4]
    unit = entry.get("unit")
    return code, _exact(entry.get("value")), unit if isinstance(unit, str) else None


def _exact(value: object) -> Decimal | str:
    """pysml applies the scaler as value / 10**-scaler: a correctly rounded float, whose shortest
    repr is the exact decimal for anything a meter shows (under 16 digits); read back as that."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return _text(value) or ""


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


__all__ = ["ESC", "MAX_FRAME", "START", "SmlError", "SmlFramer", "SmlReadout", "crc16_x25", "decode"]
