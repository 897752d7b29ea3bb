"""The simulator's own M-Bus framing (EN 13757-2), written apart from the driver's on purpose: the
stages are independent, and a slave that shares the master's code would share its mistakes."""

from __future__ import annotations

from dataclasses import dataclass

ACK = b"\xe5"
SND_NKE, SND_UD, REQ_UD2, FCB, RSP_UD = 0x40, 0x53, 0x5B, 0x20, 0x08
ADDRESS_SELECTED, ADDRESS_BROADCAST_REPLY, ADDRESS_BROADCAST = 0xFD, 0xFE, 0xFF
CI_SELECT, CI_VARIABLE = 0x52, 0x72


@dataclass(frozen=True, slots=True)
class Request:
    c: int
    a: int
    ci: int | None = None  # None: a short frame
    data: bytes = b""

    @property
    def size(self) -> int:
        """Its length on the wire."""
        return 5 if self.ci is None else len(self.data) + 9


def long_frame(c: int, a: int, ci: int, data: bytes) -> bytes:
    body = bytes((c, a, ci)) + data
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def split(buf: bytearray) -> list[Request]:
    """Whole, valid requests out of `buf` (consumed). A slave ignores what is not one: a byte that
    starts no frame is dropped, a frame with a bad checksum is dropped whole."""
    out = []
    while buf:
        start = buf[0]
        if start == 0x10:
            if len(buf) < 5:
                break
            raw = bytes(buf[:5])
            del buf[:5]
            if raw[4] == 0x16 and (raw[1] + raw[2]) & 0xFF == raw[3]:
                out.append(Request(raw[1], raw[2]))
        elif start == 0x68:
            if len(buf) < 4:
                break
            if buf[1] != buf[2] or buf[3] != 0x68 or buf[1] < 3:
                del buf[0]
                continue
            need = buf[1] + 6
            if len(buf) < need:
                break
            raw = bytes(buf[:need])
            del buf[:need]
            body = raw[4:-2]
            if raw[-1] == 0x16 and sum(body) & 0xFF == raw[-2]:
                out.append(Request(body[0], body[1], body[2], body[3:]))
        else:
            del buf[0]
    return out


__all__ = ["ACK", "Request", "long_frame", "split"]
