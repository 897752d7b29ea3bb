"""One simulated DSMR 5 meter (with a gas meter on M-Bus channel 1), and its telegrams.

The registers advance by whole watt-hours per telegram, so every telegram's values are exact
decimals the test can predict: `expected()` gives the canonical readings of the last telegram.
Faults are injected per telegram: a wrong CRC, a telegram not sent, line noise, a telegram cut
off, and a meter exchange (the new meter's registers start again near zero, under a new id).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

_CET, _CEST = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))


def crc16(data: bytes) -> int:
    """CRC16/ARC (reflected 0x8005, init 0), bit by bit: written apart from the driver's table, so
    the simulator checks the driver rather than repeating it. Check value of b"123456789": 0xBB3D."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def tst(ts: datetime) -> str:
    """A DSMR timestamp: local Dutch time with S (summer) or W (winter); summer time is taken as
    April to October, close enough for a simulator whose clock tests read back through tst()."""
    summer = 4 <= ts.month <= 10
    local = ts.astimezone(_CEST if summer else _CET)
    return local.strftime("%y%m%d%H%M%S") + ("S" if summer else "W")


@dataclass(frozen=True, slots=True)
class Faults:
    """Which telegrams go wrong (1-based numbers), so a test knows exactly what to expect."""

    bad_crc: frozenset[int] = frozenset()
    missing: frozenset[int] = frozenset()
    garbage: frozenset[int] = frozenset()  # noise written before the telegram
    truncated: frozenset[int] = frozenset()  # the telegram cut in the middle, then the next
    exchange: frozenset[int] = frozenset()  # the meter is replaced before this telegram


@dataclass(slots=True)
class SimP1Meter:
    """A DSMR 5 electricity meter with a gas meter; `telegram()` is the next telegram's bytes."""

    equipment: str = "E0043007382246019"
    gas_equipment: str = "G0039001936990619"
    t1_wh: int = 2_130_115
    t2_wh: int = 245_467
    export_wh: int = 0
    gas_l: int = 246_138
    power_w: int = 111
    voltage_dv: int = 2299
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    count: int = 0
    clock: datetime = field(default_factory=lambda: datetime(2024, 1, 10, 12, 0, 0, tzinfo=UTC))
    step: timedelta = timedelta(seconds=1)

    def advance(self) -> None:
        self.count += 1
        self.clock += self.step
        if self.count in self.faults.exchange:
            self.equipment = "E00" + str(self.rng.randrange(10**13, 10**14))
            self.t1_wh, self.t2_wh, self.export_wh = 12, 0, 0
        self.power_w = self.rng.randrange(50, 4000)
        self.t1_wh += self.rng.randrange(0, 3)
        self.voltage_dv = self.rng.randrange(2250, 2350)
        if self.count % 300 == 0:
            self.gas_l += 7

    def body(self) -> bytes:
        hexid = self.equipment.encode().hex().upper()
        lines = [
            "/ISK5\\2M550T-1012", "",
            "1-3:0.2.8(50)",
            f"0-0:1.0.0({tst(self.clock)})",
            f"0-0:96.1.1({hexid})",
            f"1-0:1.8.1({self.t1_wh / 1000:010.3f}*kWh)",
            f"1-0:1.8.2({self.t2_wh / 1000:010.3f}*kWh)",
            f"1-0:2.8.1({self.export_wh / 1000:010.3f}*kWh)",
            "1-0:2.8.2(000000.000*kWh)",
            "0-0:96.14.0(0001)",
            f"1-0:1.7.0({self.power_w / 1000:06.3f}*kW)",
            "1-0:2.7.0(00.000*kW)",
            "1-0:99.97.0(1)(0-0:96.7.19)(190326095015W)(0000002014*s)",
            f"1-0:32.7.0({self.voltage_dv / 10:05.1f}*V)",
            "1-0:31.7.0(001*A)",
            "0-1:24.1.0(003)",
            f"0-1:96.1.0({self.gas_equipment.encode().hex().upper()})",
            f"0-1:24.2.1({tst(self.clock.replace(second=0))})({self.gas_l / 1000:09.3f}*m3)",
            "!",
        ]
        return "\r\n".join(lines).encode("ascii")

    def telegram(self) -> bytes:
        """The next telegram as written on the wire (with its faults); b"" for a missing one."""
        self.advance()
        n = self.count
        if n in self.faults.missing:
            return b""
        body = self.body()
        crc = crc16(body)
        if n in self.faults.bad_crc:
            crc ^= 0x0101
        wire = body + f"{crc:04X}\r\n".encode()
        if n in self.faults.truncated:
            wire = wire[: len(wire) // 2]
        if n in self.faults.garbage:
            wire = bytes(self.rng.randrange(0x20, 0x7F) for _ in range(40)).replace(b"/", b"#") + b"\r\n" + wire
        return wire

    def expected(self) -> dict[str, Decimal]:
        """The canonical channels of the last telegram, as exact decimals (kWh, kW, V, A)."""
        t1, t2, ex = Decimal(self.t1_wh) / 1000, Decimal(self.t2_wh) / 1000, Decimal(self.export_wh) / 1000
        return {"energy_import_t1": t1, "energy_import_t2": t2, "energy_import": t1 + t2,
                "energy_export_t1": ex, "energy_export_t2": Decimal(0), "energy_export": ex,
                "power": Decimal(self.power_w) / 1000, "voltage_l1": Decimal(self.voltage_dv) / 10,
                "current_l1": Decimal(1)}


__all__ = ["Faults", "SimP1Meter", "tst"]
