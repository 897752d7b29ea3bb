"""M-Bus link layer (EN 13757-2): the single character, short and long frames, their checksums.

Pure functions over bytes, shared by the master (drivers/mbus/master.py), the bus scan and the
simulator's slaves. A frame that is not one (bad start, length, checksum or stop byte) raises
`FrameError` naming what is wrong and where, never an IndexError.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import DriverError

ACK = 0xE5
SHORT_START = 0x10
LONG_START = 0x68
STOP = 0x16

# C fields (master -> slave); FCB 0x20 and FCV 0x10 are or-ed into REQ_UD2 and SND_UD.
SND_NKE = 0x40
SND_UD = 0x53
REQ_UD2 = 0x5B
FCB = 0x20
FCV = 0x10
RSP_UD = 0x08  # slave -> master; the slave may or in ACD 0x20 / DFC 0x10

#: Addresses with a meaning of their own: 0xFD answers through secondary selection, 0xFE is every
#: slave (test/broadcast with answer), 0xFF broadcast without answer.
ADDRESS_SELECTED = 0xFD
ADDRESS_BROADCAST_REPLY = 0xFE
ADDRESS_BROADCAST = 0xFF

CI_SELECT = 0x52  # SND_UD: select a slave by its secondary address
CI_VARIABLE = 0x72  # RSP_UD: variable data structure, least significant byte first
CI_FIXED = (0x73, 0x77)  # RSP_UD: fixed data structure (old meters)


class FrameError(DriverError):
    """Bytes that are not an M-Bus frame, or a telegram that cannot be decoded."""

    kind = "frame"

    def __init__(self, where: str, message: str, raw: bytes = b"", meter_id: str | None = None) -> None:
        self.raw = raw
        super().__init__(meter_id, where, message)


@dataclass(frozen=True, slots=True)
class LongFrame:
    """A long frame (or control frame, without data): C, A, CI and the user data after CI."""

    c: int
    a: int
    ci: int
    data: bytes

    def encode(self) -> bytes:
        return long_frame(self.c, self.a, self.ci, self.data)


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def short_frame(c: int, a: int) -> bytes:
    return bytes((SHORT_START, c, a, (c + a) & 0xFF, STOP))


def long_frame(c: int, a: int, ci: int, data: bytes = b"") -> bytes:
    body = bytes((c, a, ci)) + data
    if len(body) > 255:
        msg = f"user data of {len(data)} bytes does not fit a long frame (at most 252)"
        raise ValueError(msg)
    return bytes((LONG_START, len(body), len(body), LONG_START)) + body + bytes((checksum(body), STOP))


def snd_nke(a: int) -> bytes:
    return short_frame(SND_NKE, a)


def req_ud2(a: int, fcb: bool) -> bytes:
    return short_frame(REQ_UD2 | (FCB if fcb else 0), a)


def select_secondary(pattern: bytes) -> bytes:
    """SND_UD with CI 0x52 to 0xFD: the 8-byte secondary address (id, manufacturer, version, medium;
    an F nibble or 0xFF byte is a wildcard)."""
    return long_frame(SND_UD, ADDRESS_SELECTED, CI_SELECT, pattern)


def frame_length(head: bytes) -> int | None:
    """How many bytes the frame starting with `head` has in all, from its first 4 bytes (fewer:
    None, more needed); FrameError when they start no frame."""
    if not head:
        return None
    start = head[0]
    if start == ACK:
        return 1
    if start == SHORT_START:
        return 5
    if start != LONG_START:
        raise FrameError("link", f"byte {start:#04x} starts no M-Bus frame (0xE5, 0x10 or 0x68)", head)
    if len(head) < 4:
        return None
    if head[1] != head[2] or head[3] != LONG_START:
        raise FrameError("link", f"long frame header {head[:4].hex(' ')}: L fields differ or second 0x68 missing", head)
    if head[1] < 3:
        raise FrameError("link", f"long frame length {head[1]} is below 3 (C, A, CI)", head)
    return head[1] + 6


def parse(raw: bytes) -> int | tuple[int, int] | LongFrame:
    """One frame: ACK (the int 0xE5), a short frame (C, A) or a long frame; FrameError otherwise."""
    need = frame_length(raw[:4])
    if need is None or len(raw) < need:
        raise FrameError("link", f"truncated frame: {len(raw)} bytes, {need or 'more'} expected", raw)
    if len(raw) > need:
        raise FrameError("link", f"{len(raw) - need} byte(s) after the frame's end", raw)
    if need == 1:
        return ACK
    if raw[-1] != STOP:
        raise FrameError("link", f"stop byte is {raw[-1]:#04x}, not 0x16", raw)
    body = raw[1:3] if need == 5 else raw[4:-2]
    if checksum(body) != raw[-2]:
        raise FrameError("link", f"checksum {raw[-2]:#04x} but the bytes sum to {checksum(body):#04x}", raw)
    if need == 5:
        return (raw[1], raw[2])
    return LongFrame(raw[4], raw[5], raw[6], bytes(raw[7:-2]))


def from_hex(text: str) -> bytes:
    """Bytes from spaced hex ("68 3C 3C 68 ..."), as fixtures and logs write frames."""
    return bytes.fromhex("".join(text.split()))


__all__ = [
    "ACK", "ADDRESS_SELECTED", "CI_FIXED", "CI_SELECT", "CI_VARIABLE", "FCB", "REQ_UD2", "RSP_UD", "SND_NKE",
    "SND_UD", "FrameError", "LongFrame", "checksum", "frame_length", "from_hex", "long_frame", "parse",
    "req_ud2", "select_secondary", "short_frame", "snd_nke",
]
