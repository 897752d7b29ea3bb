"""Simulated M-Bus slaves: what each answers to SND_NKE, REQ_UD2 (multi-telegram, FCB) and a
secondary selection (CI 0x52 with wildcards), with fault injection.

A `Slave` answers from its `telegrams()`: user data after CI 0x72, built from its values
(`water`, `heat`) or replayed from a recorded frame (`replay`). `Bus` holds the slaves of one line
and turns request bytes into answer bytes, as the wire would: two slaves answering at once give
a garbled byte (a collision). Faults (`Faults`) are switched on per slave while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from simulators.mbus import wire
from simulators.mbus.wire import Request

MEDIUM_WATER, MEDIUM_HEAT, MEDIUM_WARM_WATER = 0x07, 0x04, 0x06


@dataclass(slots=True)
class Faults:
    bad_checksum: bool = False  # every answer's checksum off by one
    silent: bool = False  # answers nothing (a missing telegram, a dead meter)
    garbage: bytes = b""  # sent before each answer (noise on the line)
    truncate: int = 0  # answers cut to this many bytes (0: whole)
    status: int = 0  # the status byte of its telegrams (0x04 power low, 0x08 permanent error, 0x10 temporary)
    drop_after: int = -1  # >= 0: answer that many more times, then lose one answer (a lost telegram)


def bcd(value: int, size: int) -> bytes:
    digits = f"{value:0{size * 2}d}"
    return bytes.fromhex(digits)[::-1]


def man_code(letters: str) -> bytes:
    a, b, c = (ord(x) - 64 for x in letters)
    return ((a << 10) | (b << 5) | c).to_bytes(2, "little")


def header(ident: int, man: str, version: int, medium: int, access: int, status: int) -> bytes:
    return bcd(ident, 4) + man_code(man) + bytes((version, medium, access & 0xFF, status, 0, 0))


def record(dif: int, vif: int | bytes, data: bytes, difes: bytes = b"") -> bytes:
    return bytes((dif,)) + difes + (bytes((vif,)) if isinstance(vif, int) else vif) + data


def date_g(d: date) -> bytes:
    y = d.year % 100
    return bytes((d.day | ((y & 0x07) << 5), d.month | ((y & 0x78) << 1)))


@dataclass(slots=True)
class Slave:
    """One meter on the bus. `records` builds its data records from its state on each read;
    `per_telegram` splits them over several telegrams (0: all in one)."""

    address: int  # primary 1..250
    ident: int  # 8 BCD digits of the secondary address
    man: str = "GWY"
    version: int = 1
    medium: int = MEDIUM_WATER
    records: Callable[[Slave], list[bytes]] = field(default=lambda s: [])
    per_telegram: int = 0
    faults: Faults = field(default_factory=Faults)
    replay: bytes = b""  # a recorded RSP_UD frame answered as is (records unused)
    # state: values the records read, and the link layer's
    values: dict[str, int] = field(default_factory=dict)
    access: int = 0
    selected: bool = False
    _next: int = 0
    _last_fcb: bool | None = None
    _last: bytes = b""

    def secondary(self) -> str:
        return f"{self.ident:08d}{int.from_bytes(man_code(self.man), 'little'):04X}{self.version:02X}{self.medium:02X}"

    def telegrams(self) -> list[bytes]:
        recs = self.records(self)
        size = self.per_telegram or max(1, len(recs))
        chunks = [recs[i:i + size] for i in range(0, len(recs), size)] or [[]]
        out = []
        for i, chunk in enumerate(chunks):
            more = b"\x1f" if i < len(chunks) - 1 else b""
            out.append(header(self.ident, self.man, self.version, self.medium, self.access, self.faults.status)
                       + b"".join(chunk) + more)
        return out

    def reset(self) -> None:
        self._next, self._last_fcb, self._last = 0, None, b""

    def respond(self, c: int, a: int) -> bytes:
        """The answer to a REQ_UD2: the next telegram when FCB toggled (or after a reset), the
        last one again when it did not (the master is repeating itself)."""
        fcb = bool(c & wire.FCB)
        if self._last and self._last_fcb == fcb:
            return self._last
        if self.replay:
            self._last = self.replay
        else:
            telegrams = self.telegrams()
            if self._next >= len(telegrams):
                self._next = 0
            self._last = wire.long_frame(wire.RSP_UD, a, wire.CI_VARIABLE, telegrams[self._next])
            self._next = (self._next + 1) % len(telegrams)
            if self._next == 0:
                self.access += 1
        self._last_fcb = fcb
        return self._last

    def matches(self, pattern: bytes) -> bool:
        want = pattern[:4][::-1].hex().upper() + pattern[4:6][::-1].hex().upper() + pattern[6:8].hex().upper()
        return all(w == "F" or w == h for w, h in zip(want, self.secondary(), strict=True))

    def wire(self, answer: bytes) -> bytes:
        f = self.faults
        if f.bad_checksum and len(answer) > 2:
            answer = answer[:-2] + bytes(((answer[-2] + 1) & 0xFF,)) + answer[-1:]
        if f.truncate:
            answer = answer[:f.truncate]
        return f.garbage + answer


def _dropped(f: Faults) -> bool:
    if f.drop_after < 0:
        return False
    f.drop_after -= 1
    return f.drop_after == -1


class Bus:
    """The slaves of one line: request bytes in, the bytes on the wire out (b"": silence)."""

    def __init__(self, slaves: list[Slave]) -> None:
        self.slaves = slaves
        self.requests = 0

    def _answer_all(self, answers: list[tuple[Slave, bytes]]) -> bytes:
        heard = [(s, a) for s, a in answers if not s.faults.silent and not _dropped(s.faults)]
        if not heard:
            return b""
        if len(heard) > 1:
            return bytes((0xE5 ^ 0x5A,)) * 2  # two slaves at once: the bits collide
        slave, answer = heard[0]
        return slave.wire(answer)

    def handle(self, request: Request) -> bytes:
        self.requests += 1
        if request.ci is None:
            c, a = request.c, request.a
            if a == wire.ADDRESS_SELECTED:
                targets = [s for s in self.slaves if s.selected]
            elif a in (wire.ADDRESS_BROADCAST_REPLY, wire.ADDRESS_BROADCAST):
                targets = list(self.slaves)
            else:
                targets = [s for s in self.slaves if s.address == a]
            if c == wire.SND_NKE:
                for s in targets:
                    s.reset()
                    if a != wire.ADDRESS_SELECTED:
                        s.selected = False
                return b"" if a == wire.ADDRESS_BROADCAST else self._answer_all([(s, wire.ACK) for s in targets])
            if c & ~(wire.FCB | 0x10) == wire.REQ_UD2 & ~0x10:
                return self._answer_all([(s, s.respond(c, a)) for s in targets])
            return b""
        if request.ci == wire.CI_SELECT and request.a == wire.ADDRESS_SELECTED:
            chosen = []
            for s in self.slaves:
                s.selected = s.matches(request.data)
                if s.selected:
                    s.reset()
                    chosen.append((s, wire.ACK))
            return self._answer_all(chosen)
        return b""


# -- meters ------------------------------------------------------------------------------------

def water_records(s: Slave) -> list[bytes]:
    """A cold-water meter: volume (litres, BCD), flow (l/h), storage 1 with its due date."""
    v = s.values
    return [
        record(0x0C, 0x13, bcd(v.get("volume_l", 12345), 4)),  # volume, 8 BCD digits of litres
        record(0x02, 0x3B, v.get("flow_lh", 0).to_bytes(2, "little", signed=True)),  # volume flow l/h
        record(0x42, 0x6C, date_g(date(2026, 1, 1))),  # due date (storage 1)
        record(0x4C, 0x13, bcd(v.get("due_volume_l", 10000), 4)),  # volume at the due date
    ]


def heat_records(s: Slave) -> list[bytes]:
    """A heat meter: energy (kWh), volume, power, flow and return temperatures, storage 1."""
    v = s.values
    return [
        record(0x04, 0x06, v.get("energy_kwh", 4711).to_bytes(4, "little")),  # energy kWh
        record(0x04, 0x14, v.get("volume_10l", 12345).to_bytes(4, "little")),  # volume 0.01 m3
        record(0x02, 0x2B, v.get("power_w", 1500).to_bytes(2, "little", signed=True)),  # power W
        record(0x02, 0x59, v.get("flow_c100", 6512).to_bytes(2, "little", signed=True)),  # flow temp 0.01 °C
        record(0x02, 0x5D, v.get("return_c100", 4025).to_bytes(2, "little", signed=True)),  # return temp
        record(0x42, 0x6C, date_g(date(2026, 1, 1))),
        record(0x44, 0x06, v.get("due_energy_kwh", 4000).to_bytes(4, "little")),
        record(0x0F, b"", b"\x01\x02\x03"),  # manufacturer-specific data
    ]


def water(address: int, ident: int, **values: int) -> Slave:
    return Slave(address, ident, medium=MEDIUM_WATER, records=water_records, values=dict(values))


def heat(address: int, ident: int, **values: int) -> Slave:
    return Slave(address, ident, medium=MEDIUM_HEAT, records=heat_records, values=dict(values))


__all__ = ["Bus", "Faults", "Slave", "heat", "water"]
