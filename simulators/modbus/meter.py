"""SimMeter: one simulated energy meter whose state moves with time, and its register image.

Independent of gateway.normalise and of the product's profiles on purpose (a decoder or profile
bug must not be mirrored here): the registers come from the simulator's own tables
(`simulators.modbus.datasheet`), units from the tables' own small unit list, and words are built
with pymodbus' `convert_to_registers`.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Literal, get_args

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes

from gateway.model.profiles import DeviceProfile
from gateway.model.readings import Channel
from simulators.modbus.datasheet import QUANTITIES, UNITS, Datasheet, Format, SheetRegister, datasheet_for

Fault = Literal[
    "timeout", "slow", "exception", "garbage", "regression", "rollover", "spike", "stuck", "tamper",
    "disconnected", "bypass", "tou_stuck",
]
FAULTS: tuple[str, ...] = get_args(Fault)

_DATATYPE = ModbusClientMixin.DATATYPE
_TYPES = {
    Format.INT16: _DATATYPE.INT16,
    Format.UINT16: _DATATYPE.UINT16,
    Format.INT32: _DATATYPE.INT32,
    Format.UINT32: _DATATYPE.UINT32,
    Format.INT64: _DATATYPE.INT64,
    Format.UINT64: _DATATYPE.UINT64,
    Format.FLOAT32: _DATATYPE.FLOAT32,
    Format.FLOAT64: _DATATYPE.FLOAT64,
}
_GARBAGE = 0xFFFF  # all ones: NaN as a float, -1 signed, "not available" on many meters
_COUNTERS = ("energy_import", "energy_export")  # the counters a rollover shifts
#: Reactive energy as a share of active energy: the model has no reactive load of its own, and a
#: reactive counter must still read differently from the active one beside it.
_REACTIVE_SHARE = 0.3


def _load_curve(hour: float) -> float:
    """Household load relative to its base: low at night, a morning and a larger evening peak."""
    return 0.35 + 0.55 * math.exp(-(((hour - 7.5) / 1.5) ** 2)) + 0.9 * math.exp(-(((hour - 19.5) / 2.0) ** 2))


def _to_words(raw: float, reg: SheetRegister) -> list[int]:
    """Raw number -> register words in the table's word and byte order."""
    if reg.format.is_float:
        value: float | int = float(raw)
    else:
        bits = reg.words * 16
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if reg.format.signed else (0, 2**bits - 1)
        value = min(hi, max(lo, round(raw))) if math.isfinite(raw) else hi
    words = ModbusClientMixin.convert_to_registers(value, _TYPES[reg.format], word_order="big")  # ABCD
    if reg.low_word_first:
        words.reverse()
    if reg.swap_bytes:
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
    - "tamper": the table's tamper status bits are raised.
    - "disconnected": the supply relay is open: its status bits are raised and nothing is consumed;
    - "bypass": the relay status bits are raised but energy is still counted (a meter bypassed
      around its open relay, or a relay welded shut: the case usage-while-disconnected looks for).
    - "tou_stuck": the time-of-use registers stop counting while the totals go on (a tariff
      switch that lost its schedule: the case the TOU sum check looks for).

    Time-of-use registers: tariff 1 (day, 07:00-23:00 UTC) and tariff 2 (night) count the energy of
    their hours; they start as 60/40 % of the totals, so t1 + t2 = total until a fault.

    Three-phase values carry a fixed imbalance per meter (drawn from its own generator, so the
    load model's numbers do not move): L1 has the meter's voltage and current, L2 and L3 differ
    by a few volts and carry a fixed fraction of L1's current; phase powers and phase energies
    split the totals in the same proportions. Every quantity a table serves thus differs from its
    neighbours', and a profile that reads the register beside the right one reads a wrong value.
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
        #: A water or heat meter's quantities: set by hand (the load model is electrical), 0 otherwise.
        self.volume = 0.0  # m3
        self.flow = 0.0  # m3/h
        self.heat_energy = 0.0  # kWh
        self.now = (start or datetime.now(UTC)).timestamp()
        #: Energy per tariff (index 0 = t1), import and export: what the TOU registers hold.
        self.tariffs = {"import": [0.6 * self.energy_import, 0.4 * self.energy_import, 0.0, 0.0],
                        "export": [0.0, 0.0, 0.0, 0.0]}
        self._fault: Fault | None = None
        self._exception_code = ExcCodes.ILLEGAL_ADDRESS
        self.delay = 2.0  # seconds, for the "slow" fault
        self.regression_kwh = 10.0
        self.garbage_word = _GARBAGE
        self.rollover_margin_kwh = 0.05
        self.spike_kwh = 1000.0
        self.spike_factor = 20.0
        phases = random.Random(f"{seed}:{meter_id}:phases")
        self._dv = (0.0, phases.uniform(0.8, 3.0), -phases.uniform(0.8, 3.0))  # volts above/below L1
        self._share = (1.0, phases.uniform(0.55, 0.75), phases.uniform(0.3, 0.5))  # current relative to L1
        self._dpf = (0.004, 0.012, 0.02)  # phase power factors a little below the total's
        #: Import energy when the resettable "partial" counter (EM24 kWh(+) PAR) was last reset.
        self.partial_reset_kwh = phases.uniform(300.0, 900.0)
        self._shift: dict[str, float] = {}  # kWh added to a counter after a rollover
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
        self.power = 0.0 if self._fault == "disconnected" else load - pv
        self.energy_import += max(self.power, 0.0) * hours
        self.energy_export += max(-self.power, 0.0) * hours
        if self._fault != "tou_stuck":
            tariff = self.tariff_of(hour)
            self.tariffs["import"][tariff] += max(self.power, 0.0) * hours
            self.tariffs["export"][tariff] += max(-self.power, 0.0) * hours
        self.voltage = self._rng.gauss(230.0, 1.5)
        self.frequency = self._rng.gauss(50.0, 0.02)
        self.power_factor = min(1.0, max(0.5, self._rng.gauss(0.95, 0.01)))
        self.revision += 1

    @staticmethod
    def tariff_of(hour: float) -> int:
        """The tariff in force at `hour` (UTC): 0 (t1, day) from 07:00 to 23:00, else 1 (t2, night)."""
        return 0 if 7.0 <= hour < 23.0 else 1

    def value(self, channel: Channel) -> float:
        """The channel's value in its canonical unit, as the meter would report it now."""
        return self.quantity(channel.value)

    def quantity(self, name: str) -> float:
        """A quantity of the datasheet vocabulary (`datasheet.QUANTITIES`) in its base unit:
        kWh, kvarh, kW, kvar, kVA, V, A, Hz, degrees; 0 for quantities an electricity meter lacks."""
        if name not in QUANTITIES:
            msg = f"simulator: unknown quantity {name!r}"
            raise ValueError(msg)
        return self.quantities().get(name, 0.0)

    def _counter(self, name: str) -> float:
        drop = self.regression_kwh if self._fault == "regression" else 0.0
        raw = self.energy_import if name == "energy_import" else self.energy_export
        return max(0.0, raw - drop) + self._shift.get(name, 0.0)

    def quantities(self) -> dict[str, float]:
        """Every quantity the meter holds now, in base units (see `quantity`)."""
        imp, exp = self._counter("energy_import"), self._counter("energy_export")
        power = self.power * (self.spike_factor if self._fault == "spike" else 1.0)
        pf = self.power_factor
        share = [s / sum(self._share) for s in self._share]  # each phase's part of power and energy
        volts = [self.voltage + dv for dv in self._dv]
        amps = [self.current * s for s in self._share]
        watts = [power * s for s in share]
        pfs = [min(1.0, max(0.1, pf - d)) for d in self._dpf]
        lines = [math.sqrt(3) * (volts[a] + volts[b]) / 2 for a, b in ((0, 1), (1, 2), (2, 0))]
        out = {
            "energy_import": imp, "energy_export": exp, "energy_total": imp + exp, "energy_net": imp - exp,
            "energy_import_partial": max(0.0, imp - self.partial_reset_kwh),
            "reactive_import": imp * _REACTIVE_SHARE, "reactive_export": exp * _REACTIVE_SHARE,
            "reactive_total": (imp + exp) * _REACTIVE_SHARE,
            "power": power, "power_factor": pf, "frequency": self.frequency,
            "apparent_power": abs(power) / pf, "reactive_power": abs(power) * math.tan(math.acos(pf)),
            "phase_angle": math.degrees(math.acos(pf)),
            "voltage_ln_avg": sum(volts) / 3, "voltage_l1_l2": lines[0], "voltage_l2_l3": lines[1],
            "voltage_l3_l1": lines[2], "voltage_ll_avg": sum(lines) / 3,
            "current_avg": sum(amps) / 3, "current_sum": sum(amps), "current_n": abs(amps[0] - (amps[1] + amps[2]) / 2),
            "volume": self.volume, "flow": self.flow, "heat_energy": self.heat_energy,
            **{f"energy_{d}_t{n + 1}": kwh for d, counters in self.tariffs.items() for n, kwh in enumerate(counters)},
        }
        for k, p in enumerate(("l1", "l2", "l3")):
            out |= {
                f"voltage_{p}": volts[k], f"current_{p}": amps[k], f"power_{p}": watts[k], f"power_factor_{p}": pfs[k],
                f"apparent_power_{p}": abs(watts[k]) / pfs[k],
                f"reactive_power_{p}": abs(watts[k]) * math.tan(math.acos(pfs[k])),
                f"phase_angle_{p}": math.degrees(math.acos(pfs[k])),
                f"energy_import_{p}": imp * share[k], f"energy_export_{p}": exp * share[k],
                f"energy_total_{p}": (imp + exp) * share[k],
            }
        return out

    def raw(self, reg: SheetRegister, quantities: dict[str, float] | None = None) -> float:
        """The number the register holds before encoding: the quantity in the device's unit,
        wrapped where the counter wraps, with resolution and offset undone."""
        if reg.unit not in UNITS and reg.unit != "":
            msg = f"simulator: unit {reg.unit!r} of {reg.quantity} is not in its unit table"
            raise ValueError(msg)
        value = (quantities if quantities is not None else self.quantities()).get(reg.quantity, 0.0)
        device = value / (UNITS[reg.unit][1] if reg.unit else 1.0)
        if reg.wraps_at:
            device %= reg.wraps_at
        return (device - reg.offset) / reg.resolution

    def encode(self, layout: DeviceProfile | Datasheet) -> dict[tuple[int, int], list[int]]:
        """Words of every register and status word of the model's table, keyed by
        (function code, address). A profile stands for its model's table (`datasheet_for`)."""
        if self._fault == "stuck" and self._stuck is not None:
            return self._stuck
        sheet = datasheet_for(layout)
        if self._roll_pending:
            self._roll_to_modulus(sheet)
        image: dict[tuple[int, int], list[int]] = {}
        quantities = self.quantities()
        for reg in sheet.registers:
            key = (reg.function_code, reg.address)
            garbage = self._fault == "garbage"
            image[key] = [self.garbage_word] * reg.words if garbage else _to_words(self.raw(reg, quantities), reg)
        for constant in sheet.constants:
            image[(constant.function_code, constant.address)] = [constant.value]
        for status in sheet.status:
            # A status word holds several bits: start from what is there, set or clear ours.
            key = (status.function_code, status.address)
            word = image.get(key, [0])[0]
            raised = (self._fault == "tamper" and status.condition == "tamper") or \
                (self._fault in ("disconnected", "bypass") and status.condition == "relay_open")
            bit = raised if status.active else not raised
            image[key] = [(word | (1 << status.bit)) if bit else (word & ~(1 << status.bit))]
        if self._fault == "stuck":
            self._stuck = image
        return image

    def _roll_to_modulus(self, sheet: Datasheet) -> None:
        """Shift the counters so their registers sit `rollover_margin_kwh` below where they wrap."""
        self._roll_pending = False
        for reg in sheet.registers:
            if not reg.wraps_at or reg.quantity not in _COUNTERS:
                continue
            top = reg.wraps_at * (UNITS[reg.unit][1] if reg.unit else 1.0)  # the wrap in kWh
            unshifted = self._counter(reg.quantity) - self._shift.get(reg.quantity, 0.0)
            self._shift[reg.quantity] = top - self.rollover_margin_kwh - unshifted
        self.revision += 1
