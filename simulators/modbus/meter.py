"""SimMeter: one simulated energy meter whose state moves with time, and its register image.

Independent of gateway.normalise on purpose (a decoder bug must not be mirrored here): units
have their own small table and words are built with pymodbus' `convert_to_registers`.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Literal, get_args

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes

from gateway.model.profiles import ByteOrder, DataType, DeviceFlag, DeviceProfile, RegisterSpec
from gateway.model.readings import Channel, Kind

Fault = Literal[
    "timeout", "slow", "exception", "garbage", "regression", "rollover", "spike", "stuck", "tamper",
]
FAULTS: tuple[str, ...] = get_args(Fault)

_DATATYPE = ModbusClientMixin.DATATYPE
_TYPES = {
    DataType.INT16: _DATATYPE.INT16,
    DataType.UINT16: _DATATYPE.UINT16,
    DataType.INT32: _DATATYPE.INT32,
    DataType.UINT32: _DATATYPE.UINT32,
    DataType.INT64: _DATATYPE.INT64,
    DataType.UINT64: _DATATYPE.UINT64,
    DataType.FLOAT32: _DATATYPE.FLOAT32,
    DataType.FLOAT64: _DATATYPE.FLOAT64,
}
#: How many canonical units one device unit is (kWh per Wh, ...). Written here, not imported.
_PER_DEVICE_UNIT = {
    "": 1.0, "kWh": 1.0, "Wh": 1e-3, "MWh": 1e3, "kW": 1.0, "W": 1e-3, "MW": 1e3,
    "V": 1.0, "kV": 1e3, "A": 1.0, "mA": 1e-3, "Hz": 1.0,
    "m3": 1.0, "L": 1e-3, "m3/h": 1.0, "L/h": 1e-3,
}
_GARBAGE = 0xFFFF  # all ones: NaN as a float, -1 signed, "not available" on many meters
_CUMULATIVE = (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT)


def _load_curve(hour: float) -> float:
    """Household load relative to its base: low at night, a morning and a larger evening peak."""
    return 0.35 + 0.55 * math.exp(-(((hour - 7.5) / 1.5) ** 2)) + 0.9 * math.exp(-(((hour - 19.5) / 2.0) ** 2))


def _to_words(raw: float, spec: RegisterSpec) -> list[int]:
    """Raw number -> register words in the spec's byte order."""
    if spec.type in (DataType.FLOAT32, DataType.FLOAT64):
        value: float | int = float(raw)
    else:
        bits = spec.words * 16
        lo, hi = (0, 2**bits - 1) if spec.type.value.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        value = min(hi, max(lo, round(raw)))
    words = ModbusClientMixin.convert_to_registers(value, _TYPES[spec.type], word_order="big")  # ABCD
    if spec.order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    if spec.order in (ByteOrder.BADC, ByteOrder.DCBA):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


class SimMeter:
    """A meter whose energy integrates a daily load curve plus noise; same seed, same data.

    `fault` can be changed at run time:

    - "timeout": never answers; "slow": answers after `delay` s; "exception": answers
      `exception_code` (these three are served by SimFleet);
    - "garbage": every word is `garbage_word` (0xFFFF: NaN as float32, all ones as integers);
    - "regression": cumulative channels read `regression_kwh` lower while the fault is set;
    - "rollover": cumulative registers with a modulus jump to `rollover_margin_kwh` below it and
      wrap past it as energy grows. The shift stays after the fault is cleared (a real meter
      that wrapped does not unwrap);
    - "spike": energy jumps by `spike_kwh` once (a one-off step that stays) and power reads
      `spike_factor` times higher while the fault is set;
    - "stuck": every register keeps the words it had when the fault was set;
    - "tamper": the profile's tamper status bits are raised.
    """

    def __init__(
        self, meter_id: str, *, seed: int = 1, start: datetime | None = None, energy_import: float | None = None,
    ) -> None:
        self.meter_id = meter_id
        self._rng = random.Random(f"{seed}:{meter_id}")
        self.base_kw = self._rng.uniform(0.3, 1.5)
        self.pv_kw = self._rng.uniform(1.0, 4.0) if self._rng.random() < 0.2 else 0.0
        self.energy_import = energy_import if energy_import is not None else self._rng.uniform(1_000, 20_000)
        self.energy_export = 0.0
        self.power = self.base_kw
        self.voltage = 230.0
        self.frequency = 50.0
        self.power_factor = 0.95
        self.now = (start or datetime.now(UTC)).timestamp()
        self._fault: Fault | None = None
        self._exception_code = ExcCodes.ILLEGAL_ADDRESS
        self.delay = 2.0  # seconds, for the "slow" fault
        self.regression_kwh = 10.0
        self.garbage_word = _GARBAGE
        self.rollover_margin_kwh = 0.05
        self.spike_kwh = 1000.0
        self.spike_factor = 20.0
        self._shift: dict[Channel, float] = {}  # kWh added to a cumulative channel after a rollover
        self._roll_pending = False
        self._stuck: dict[tuple[int, int], list[int]] | None = None
        self.revision = 0  # bumped by every change that alters the registers
        self.tick(self.now)

    @property
    def fault(self) -> Fault | None:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        if fault is not None and fault not in FAULTS:
            msg = f"meter {self.meter_id}: unknown fault {fault!r} (known: {', '.join(FAULTS)})"
            raise ValueError(msg)
        if fault == "spike" and self._fault != "spike":
            self.energy_import += self.spike_kwh
        self._roll_pending = fault == "rollover" and self._fault != "rollover"
        self._stuck = None
        self._fault = fault
        self.revision += 1

    @property
    def exception_code(self) -> int:
        return int(self._exception_code)

    @exception_code.setter
    def exception_code(self, code: int) -> None:
        self._exception_code = ExcCodes(code)  # ValueError for a code Modbus does not define

    @property
    def current(self) -> float:
        return abs(self.power) * 1000 / (self.voltage * self.power_factor)

    def tick(self, now: datetime | float) -> None:
        """Advance to simulated time `now` (UTC): integrate energy, draw fresh instantaneous values."""
        t = now.timestamp() if isinstance(now, datetime) else float(now)
        hours = max(0.0, t - self.now) / 3600
        self.now = max(self.now, t)
        hour = (self.now % 86400) / 3600
        load = self.base_kw * _load_curve(hour) * max(0.2, self._rng.gauss(1.0, 0.1))
        pv = self.pv_kw * max(0.0, math.sin(math.pi * (hour - 6) / 12))
        self.power = load - pv
        self.energy_import += max(self.power, 0.0) * hours
        self.energy_export += max(-self.power, 0.0) * hours
        self.voltage = self._rng.gauss(230.0, 1.5)
        self.frequency = self._rng.gauss(50.0, 0.02)
        self.power_factor = min(1.0, max(0.5, self._rng.gauss(0.95, 0.01)))
        self.revision += 1

    def value(self, channel: Channel) -> float:
        """The channel's value in its canonical unit, as the meter would report it now."""
        drop = self.regression_kwh if self._fault == "regression" else 0.0
        match channel:
            case Channel.ENERGY_IMPORT:
                return max(0.0, self.energy_import - drop) + self._shift.get(channel, 0.0)
            case Channel.ENERGY_EXPORT:
                return max(0.0, self.energy_export - drop) + self._shift.get(channel, 0.0)
            case Channel.POWER:
                return self.power * (self.spike_factor if self._fault == "spike" else 1.0)
            case Channel.VOLTAGE_L1 | Channel.VOLTAGE_L2 | Channel.VOLTAGE_L3:
                return self.voltage
            case Channel.CURRENT_L1 | Channel.CURRENT_L2 | Channel.CURRENT_L3:
                return self.current
            case Channel.FREQUENCY:
                return self.frequency
            case Channel.POWER_FACTOR:
                return self.power_factor
            case _:  # water / gas / heat channels are not simulated by an electricity meter
                return 0.0

    def raw(self, spec: RegisterSpec) -> float:
        """The number the register holds before encoding: canonical value in the device's unit,
        wrapped at the register's modulus, with scale and offset undone."""
        if spec.unit not in _PER_DEVICE_UNIT:
            msg = f"simulator: unit {spec.unit!r} of {spec.channel.value} is not in its unit table"
            raise ValueError(msg)
        device = self.value(spec.channel) / _PER_DEVICE_UNIT[spec.unit]
        if spec.modulus:
            device %= spec.modulus
        return (device - spec.offset) / spec.scale

    def encode(self, profile: DeviceProfile) -> dict[tuple[int, int], list[int]]:
        """Words of every profile register and status word, keyed by (function code, address)."""
        if self._fault == "stuck" and self._stuck is not None:
            return self._stuck
        if self._roll_pending:
            self._roll_to_modulus(profile)
        image: dict[tuple[int, int], list[int]] = {}
        for spec in profile.registers:
            key = (spec.function.code, spec.address)
            image[key] = [self.garbage_word] * spec.words if self._fault == "garbage" else _to_words(self.raw(spec), spec)
        for flag in profile.flags:
            # A status word holds several bits: start from what is there, set or clear ours.
            key = (flag.function.code, flag.address)
            word = image.get(key, [0])[0]
            raised = self._fault == "tamper" and flag.flag is DeviceFlag.TAMPER
            bit = raised if flag.active else not raised
            image[key] = [(word | (1 << flag.bit)) if bit else (word & ~(1 << flag.bit))]
        if self._fault == "stuck":
            self._stuck = image
        return image

    def _roll_to_modulus(self, profile: DeviceProfile) -> None:
        """Shift cumulative channels so their registers sit `rollover_margin_kwh` below the modulus."""
        self._roll_pending = False
        for spec in profile.registers:
            if spec.kind is not Kind.CUMULATIVE or not spec.modulus or spec.channel not in _CUMULATIVE:
                continue
            top = spec.modulus * _PER_DEVICE_UNIT[spec.unit]  # the modulus in kWh
            unshifted = self.value(spec.channel) - self._shift.get(spec.channel, 0.0)
            self._shift[spec.channel] = top - self.rollover_margin_kwh - unshifted
        self.revision += 1
