"""One simulated SML meter (a German "moderne Messeinrichtung" behind an optical head): each
`frame()` is a transport frame with an OpenResponse, a GetList.Res and a CloseResponse, written
with an encoder of our own (SML 1.04 TLV, CRC16/X25 written out here, not taken from the decoder's
library), so the driver's decoder is checked against an independent writer.

Energy is kept in 0.1 Wh with scaler -1 (as EMH, ISKRA and EasyMeter meters send it), power in W
with scaler 0, signed (negative while exporting). Faults per frame number: a wrong CRC, a frame
not sent, noise between frames, a frame cut off, and a meter exchange (the registers restart near
zero under a new server id).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from simulators.p1.meter import Faults

ESC = b"\x1b\x1b\x1b\x1b"


def x25(data: bytes) -> int:
    """CRC-16/X-25 (reflected 0x1021, init and xorout 0xFFFF); check value of b"123456789" 0x906E."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _tl(tag: int, length: int) -> bytes:
    """Type-length byte(s); `length` counts the data, the TL bytes are added as SML counts them."""
    if length + 1 <= 15:
        return bytes([tag << 4 | (length + 1)])
    total = length + 2
    return bytes([0x80 | tag << 4 | (total >> 4), total & 0x0F])


def octets(b: bytes) -> bytes:
    return _tl(0, len(b)) + b


def unsigned(v: int, size: int) -> bytes:
    return _tl(6, size) + v.to_bytes(size, "big")


def signed(v: int, size: int) -> bytes:
    return _tl(5, size) + v.to_bytes(size, "big", signed=True)


def seq(*items: bytes) -> bytes:
    return bytes([0x70 | len(items)]) + b"".join(items)


OPTIONAL = b"\x01"  # an absent optional field


def message(transaction: bytes, tag: int, body: bytes) -> bytes:
    head = b"\x76" + octets(transaction) + unsigned(0, 1) + unsigned(0, 1) + seq(unsigned(tag, 2), body)
    return head + b"\x63" + x25(head).to_bytes(2, "little") + b"\x00"


def obis(code: str) -> bytes:
    """"1-0:1.8.0" -> its six bytes (F = 255)."""
    a, rest = code.split("-")
    b, rest = rest.split(":")
    c, d, e = rest.split(".")
    return bytes([int(a), int(b), int(c), int(d), int(e), 255])


def entry(code: str, unit: int | None, scaler: int | None, value: bytes) -> bytes:
    return seq(octets(obis(code)), OPTIONAL, OPTIONAL,
               OPTIONAL if unit is None else unsigned(unit, 1),
               OPTIONAL if scaler is None else signed(scaler, 1), value, OPTIONAL)


def transport(messages: bytes) -> bytes:
    """Escape, pad to 4 bytes, frame and checksum."""
    body = messages.replace(ESC, ESC + ESC)
    pad = (-len(body)) % 4
    frame = ESC + b"\x01\x01\x01\x01" + body + b"\x00" * pad + ESC + bytes([0x1A, pad])
    return frame + x25(frame).to_bytes(2, "little")


@dataclass(slots=True)
class SimSmlMeter:
    """A two-way electricity meter; `frame()` is the next transport frame's bytes."""

    server_id: bytes = bytes.fromhex("0a01454d480000a1b2c3")
    import_dwh: int = 123_456_789  # 0.1 Wh: 12345.6789 kWh
    export_dwh: int = 9_876_543
    power_w: int = 0
    voltage_dv: int = 2301
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=lambda: random.Random(2))
    count: int = 0
    sec_index: int = 1_000_000

    def advance(self) -> None:
        self.count += 1
        self.sec_index += 1
        if self.count in self.faults.exchange:
            self.server_id = bytes.fromhex("0a01454d48") + self.rng.randrange(1 << 40).to_bytes(5, "big")
            self.import_dwh, self.export_dwh = 17, 0
        self.power_w = self.rng.randrange(-3000, 5000)
        if self.power_w >= 0:
            self.import_dwh += self.power_w * 10 // 3600
        else:
            self.export_dwh += -self.power_w * 10 // 3600
        self.voltage_dv = self.rng.randrange(2250, 2350)

    def messages(self) -> bytes:
        tx = self.count.to_bytes(4, "big")
        open_res = seq(OPTIONAL, OPTIONAL, octets(b"F" + tx), octets(self.server_id), OPTIONAL, OPTIONAL)
        values = seq(
            entry("129-129:199.130.3", None, None, octets(b"EMH")),
            entry("1-0:0.0.9", None, None, octets(self.server_id)),
            entry("1-0:1.8.0", 30, -1, unsigned(self.import_dwh, 8)),
            entry("1-0:2.8.0", 30, -1, unsigned(self.export_dwh, 8)),
            entry("1-0:16.7.0", 27, 0, signed(self.power_w, 4)),
            entry("1-0:32.7.0", 35, -1, unsigned(self.voltage_dv, 2)),
        )
        sensor_time = seq(unsigned(1, 1), unsigned(self.sec_index, 4))
        get_list = seq(OPTIONAL, octets(self.server_id), OPTIONAL, sensor_time, values, OPTIONAL, OPTIONAL)
        return (message(tx + b"\x01", 0x0101, open_res) + message(tx + b"\x02", 0x0701, get_list)
                + message(tx + b"\x03", 0x0201, seq(OPTIONAL)))

    def frame(self) -> bytes:
        """The next frame as written on the wire (with its faults); b"" for a missing one."""
        self.advance()
        n = self.count
        if n in self.faults.missing:
            return b""
        wire = transport(self.messages())
        if n in self.faults.bad_crc:
            wire = wire[:-2] + bytes([wire[-2] ^ 0x55, wire[-1]])
        if n in self.faults.truncated:
            wire = wire[: len(wire) // 2]
        if n in self.faults.garbage:
            wire = bytes(self.rng.randrange(0x20, 0x7F) for _ in range(40)) + wire
        return wire

    def expected(self) -> dict[str, Decimal]:
        """The canonical channels of the last frame, as exact decimals (kWh, kW, V)."""
        return {"energy_import": Decimal(self.import_dwh) / 10_000, "energy_export": Decimal(self.export_dwh) / 10_000,
                "power": Decimal(self.power_w) / 1000, "voltage_l1": Decimal(self.voltage_dv) / 10}


__all__ = ["SimSmlMeter", "transport", "x25"]
