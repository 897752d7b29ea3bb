"""A labelled data set for VEE: realistic meter series with injected faults, and the flags a
correct VEE must raise on each reading.

Electricity meters follow the Modbus simulator's own load model (`SimMeter`: a daily load
curve with noise, some meters with solar export); water meters follow a small household
model written here (morning and evening use, nothing at night). Faults are injected on top,
each with the labels its definition implies (thresholds as documented in
gateway/validate/thresholds.py; electricity: flatline and zero consumption after 24 h, water:
flatline after 24 h, zero consumption after 72 h):

- regression: the register reads 5-50 units low for 1-4 polls -> REGRESSION on those reads
  (3 episodes on some meters -> an inspection is expected);
- rollover: meters start just below their register's modulus and wrap -> ROLLOVER;
- spike: one interval's consumption jumps by 4-10x the meter's peak interval -> SPIKE (once
  the meter has the history the check needs: water meters from day 7);
- stuck: the register freezes for 26-40 h while consumption goes on, then catches up ->
  FLATLINE / ZERO_CONSUMPTION during the freeze, SPIKE on the catch-up (electricity; for water
  a day's use in one interval is not clearly beyond a big use, and is not scored);
- vacant: consumption stops for 30-60 h (water 80-100 h) -> FLATLINE, ZERO_CONSUMPTION (also
  on reads after it while the register has still not moved);
- gap: 1-40 polls never arrive -> GAP on the first read after (the true register values of
  the missing boundaries are kept, to measure estimation);
- duplicate: a poll's energy re-sent in the next batch with another value -> DUPLICATE_CONFLICT;
- out_of_range: NaN energy, 0 or 400 V, 75 Hz, power factor 1.8 -> OUT_OF_RANGE;
- clock: a poll whose device time runs 10 min ahead (FUTURE_TS), 90 s ahead (CLOCK_SKEW), or
  that arrives 8 days late (STALE_TS);
- tamper: the device reports tamper on three polls -> TAMPER, and an inspection is expected.

Confounders that must stay unflagged: evening peaks, solar meters whose import stands still
all day, water meters that stand still every night, voltage sags to 200 V, deliveries up to
40 s late.

Independent of gateway.validate on purpose: labels come from the injected faults, not from
running the checks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.model import Channel, Kind, Quality, Reading, Source, Utility
from simulators.modbus.meter import SimMeter

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
INTERVAL = 900  # seconds
STEPS_PER_DAY = 86400 // INTERVAL
WARMUP_DAYS = 2  # no faults before: the checks need history (spike: 48 intervals)
HOUR = 3600
FLATLINE_HOURS = 24.0  # the documented flatline floor the labels assume
RESOLUTION = 0.001  # the documented register resolution: smaller moves are "unchanged"
#: Days before a spike is injected: the spike check needs 48 intervals with consumption over a
#: day (electricity), 24 for water, whose use comes a few times a day.
SPIKE_HISTORY_DAYS = {Utility.ELECTRICITY: WARMUP_DAYS, Utility.WATER: 7}

LabelKey = tuple[str, Channel, datetime, float | None]

_INSTANT = {Channel.POWER, Channel.VOLTAGE_L1, Channel.FREQUENCY, Channel.POWER_FACTOR, Channel.FLOW}


def label_key(r: Reading) -> LabelKey:
    """How a reading is found in `DataSet.labels` (NaN values compare as None)."""
    return (r.meter_id, r.channel, r.ts, None if math.isnan(r.value) else r.value)


@dataclass(frozen=True, slots=True)
class MeterInfo:
    meter_id: str
    utility: Utility
    modulus: float | None  # of the cumulative register, canonical unit
    channels: tuple[Channel, ...]
    interval: float = INTERVAL
    bidirectional: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    meter_id: str
    kind: str
    start: datetime
    steps: int


@dataclass(slots=True)
class DataSet:
    meters: list[MeterInfo]
    #: Readings in arrival order, one batch per poll round (as the pipeline delivers them).
    batches: list[list[Reading]] = field(default_factory=list)
    #: Flags each reading must carry (absent: none).
    labels: dict[LabelKey, Quality] = field(default_factory=dict)
    #: Flags that are not scored on a reading, either way (ambiguous by construction).
    dont_care: dict[LabelKey, Quality] = field(default_factory=dict)
    #: True register value at boundaries whose polls never arrived: (meter, channel, ts) -> value.
    truth: dict[tuple[str, Channel, datetime], float] = field(default_factory=dict)
    #: Meters that must get an inspection_recommended event.
    inspections: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)

    def readings(self) -> Iterator[Reading]:
        for batch in self.batches:
            yield from batch

    @property
    def moduli(self) -> dict[tuple[str, Channel], float]:
        return {(m.meter_id, c): m.modulus for m in self.meters if m.modulus for c in m.channels
                if c in (Channel.ENERGY_IMPORT, Channel.VOLUME)}

    @property
    def intervals(self) -> dict[str, float]:
        return {m.meter_id: m.interval for m in self.meters}

    @property
    def utilities(self) -> dict[str, Utility]:
        return {m.meter_id: m.utility for m in self.meters}

    @property
    def bidirectional(self) -> set[str]:
        return {m.meter_id for m in self.meters if m.bidirectional}


@dataclass(slots=True)
class _Series:
    """One meter's polls before delivery: values per channel per step, plus per-step extras."""

    info: MeterInfo
    values: dict[Channel, list[float]]
    cumulative: Channel
    flags: list[dict[Channel, Quality]]  # labels per step
    quality: list[Quality]  # device-reported quality per step (tamper)
    received_offset: list[float]  # seconds from ts to receipt
    dropped: set[int] = field(default_factory=set)
    extra: dict[int, list[Reading]] = field(default_factory=dict)  # step -> readings sent with that step's batch
    busy: set[int] = field(default_factory=set)  # steps some fault already uses
    pristine: list[float] = field(default_factory=list)  # the cumulative register before any fault
    dont_care: dict[int, Quality] = field(default_factory=dict)  # step -> flags not scored on the cumulative


def _electricity(meter_id: str, steps: int, rng: random.Random, seed: int, modulus: float | None) -> dict[Channel, list[float]]:
    start_energy = modulus - rng.uniform(5, 30) if modulus else rng.uniform(1_000, 20_000)
    sim = SimMeter(meter_id, seed=seed, start=T0, energy_import=start_energy)
    out: dict[Channel, list[float]] = {c: [] for c in (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT, Channel.POWER,
                                                      Channel.VOLTAGE_L1, Channel.FREQUENCY, Channel.POWER_FACTOR)}
    for k in range(steps):
        sim.tick(T0.timestamp() + k * INTERVAL)
        out[Channel.ENERGY_IMPORT].append(sim.energy_import)
        out[Channel.ENERGY_EXPORT].append(sim.energy_export)
        out[Channel.POWER].append(sim.power)
        out[Channel.VOLTAGE_L1].append(sim.voltage)
        out[Channel.FREQUENCY].append(sim.frequency)
        out[Channel.POWER_FACTOR].append(sim.power_factor)
    return out


def _water(steps: int, rng: random.Random, modulus: float | None) -> dict[Channel, list[float]]:
    """Household water: a few draws in the morning and evening, nothing at night."""
    use = [0.0] * steps
    for day in range(steps // STEPS_PER_DAY + 1):
        hours = [rng.uniform(6, 9) for _ in range(rng.randint(1, 3))] + \
                [rng.uniform(17, 22) for _ in range(rng.randint(1, 4))] + \
                [rng.uniform(9, 17) for _ in range(rng.randint(0, 2))]
        for h in hours:
            k = day * STEPS_PER_DAY + int(h * HOUR // INTERVAL)
            if k < steps:
                use[k] += rng.uniform(0.01, 0.06)  # 10-60 L in one interval
    volume = modulus - rng.uniform(0.5, 2.0) if modulus else rng.uniform(100, 3000)
    cum, flow = [], []
    for u in use:
        volume += u
        cum.append(volume)
        flow.append(u * HOUR / INTERVAL)
    return {Channel.VOLUME: cum, Channel.FLOW: flow}


def _free_window(series: _Series, rng: random.Random, length: int, *, pad: int = 24,
                 ok: object = None, earliest: float = WARMUP_DAYS) -> int | None:
    """A start step after the warm-up where `length` steps (plus padding) are free of faults."""
    steps = len(series.quality)
    lo, hi = int(earliest * STEPS_PER_DAY) + pad, steps - length - pad - 2
    for _ in range(200):
        a = rng.randint(lo, hi) if hi > lo else lo
        span = set(range(a - pad, a + length + pad))
        if span & series.busy:
            continue
        if callable(ok) and not ok(a):
            continue
        series.busy |= span
        return a
    return None


def _set(series: _Series, step: int, channel: Channel, flag: Quality) -> None:
    series.flags[step][channel] = series.flags[step].get(channel, Quality.NONE) | flag


def _changed_at(values: list[float], a: int) -> bool:
    return values[a] - values[a - 1] > RESOLUTION


def _inject(series: _Series, kind: str, rng: random.Random, faults: list[Fault], flat_hours: tuple[float, float],
            zero_hours: float) -> bool:
    """Apply one fault to the series; False if there was no room for it."""
    c = series.cumulative
    cum = series.values[c]
    mid = series.info.meter_id

    def fault(a: int, n: int) -> None:
        faults.append(Fault(mid, kind, T0 + timedelta(seconds=a * INTERVAL), n))

    if kind == "regression":
        n = rng.randint(1, 4)
        a = _free_window(series, rng, n)
        if a is None:
            return False
        # More than the meter can use in four polls, so every read of the fault is below the last good one.
        drop = rng.uniform(5, 50) if series.info.utility is Utility.ELECTRICITY else rng.uniform(0.3, 2.0)
        for k in range(a, a + n):
            cum[k] -= drop
            _set(series, k, c, Quality.REGRESSION)
        fault(a, n)
    elif kind == "spike":
        # Judged once the meter has the documented history: water needs days to show 24 uses.
        a = _free_window(series, rng, 1, earliest=SPIKE_HISTORY_DAYS[series.info.utility])
        if a is None:
            return False
        pristine = series.pristine
        peak = max(pristine[k] - pristine[k - 1] for k in range(max(1, a - 7 * STEPS_PER_DAY), a))
        extra = rng.uniform(4, 10) * peak
        for k in range(a, len(cum)):
            cum[k] += extra
        _set(series, a, c, Quality.SPIKE)
        fault(a, 1)
    elif kind in ("stuck", "vacant"):
        lo, hi = flat_hours
        n = int(rng.uniform(lo, hi) * HOUR / INTERVAL)
        a = _free_window(series, rng, n + 1, ok=lambda s: _changed_at(cum, s))
        if a is None:
            return False
        if kind == "stuck":
            for k in range(a + 1, a + n + 1):
                cum[k] = cum[a]
            # The catch-up carries a day or more of consumption in one interval: far beyond any
            # electricity interval; for water it can be no more than a bath and a wash together,
            # so there it is not scored either way.
            if series.info.utility is Utility.ELECTRICITY:
                _set(series, a + n + 1, c, Quality.SPIKE)
            else:
                series.dont_care[a + n + 1] = Quality.SPIKE
        else:
            drop = cum[a + n] - cum[a]
            for k in range(a + 1, a + n + 1):
                cum[k] = cum[a]
            for k in range(a + n + 1, len(cum)):
                cum[k] -= drop
            for ch in (Channel.POWER, Channel.FLOW):
                if ch in series.values:
                    for k in range(a + 1, a + n + 1):
                        series.values[ch][k] = min(series.values[ch][k], 0.0)
        # The run goes on past the fault while the register still does not move (a solar
        # meter's import after a vacancy that ends at noon, a water meter at night).
        end = a + n + 1 if kind == "stuck" else next(
            (k for k in range(a + n + 1, len(cum)) if abs(cum[k] - cum[a]) > RESOLUTION), len(cum))
        for k in range(a + 1, end):
            flat = (k - a) * INTERVAL
            if flat > FLATLINE_HOURS * HOUR:
                _set(series, k, c, Quality.FLATLINE)
            if flat >= zero_hours * HOUR:
                _set(series, k, c, Quality.ZERO_CONSUMPTION)
        fault(a, n)
    elif kind == "gap":
        n = rng.randint(1, 40)
        a = _free_window(series, rng, n + 1)
        if a is None:
            return False
        series.dropped |= set(range(a, a + n))
        for ch in series.values:
            _set(series, a + n, ch, Quality.GAP)
        fault(a, n)
    elif kind == "duplicate":
        a = _free_window(series, rng, 2)
        if a is None:
            return False
        ts = T0 + timedelta(seconds=a * INTERVAL)
        dup = Reading(mid, c, ts, cum[a] + 0.37, Kind.CUMULATIVE, received_at=ts + timedelta(seconds=INTERVAL + 5))
        series.extra.setdefault(a + 1, []).append(dup)  # labelled when delivered
        fault(a, 1)
    elif kind == "out_of_range":
        a = _free_window(series, rng, 1)
        if a is None:
            return False
        if series.info.utility is Utility.ELECTRICITY:
            channel, value = rng.choice([(Channel.VOLTAGE_L1, 0.0), (Channel.VOLTAGE_L1, 400.0),
                                         (Channel.FREQUENCY, 75.0), (Channel.POWER_FACTOR, 1.8),
                                         (Channel.ENERGY_IMPORT, math.nan)])
        else:
            channel, value = rng.choice([(Channel.VOLUME, math.nan), (Channel.FLOW, -3.0)])
        series.values[channel][a] = value
        _set(series, a, channel, Quality.OUT_OF_RANGE)
        fault(a, 1)
    elif kind in ("future", "skew", "stale"):
        a = _free_window(series, rng, 1)
        if a is None:
            return False
        series.received_offset[a], flag = {"future": (-600.0, Quality.FUTURE_TS), "skew": (-90.0, Quality.CLOCK_SKEW),
                                           "stale": (8 * 86400.0, Quality.STALE_TS)}[kind]
        for ch in series.values:
            _set(series, a, ch, flag)
        fault(a, 1)
    elif kind == "tamper":
        a = _free_window(series, rng, 3)
        if a is None:
            return False
        for k in range(a, a + 3):
            series.quality[k] |= Quality.TAMPER
            for ch in series.values:
                _set(series, k, ch, Quality.TAMPER)
        fault(a, 3)
    else:
        msg = f"unknown fault {kind!r}"
        raise ValueError(msg)
    return True


# How long a flat fault lasts, by (kind, water meter): a frozen register is found within two days;
# a vacant premises is long enough to pass the zero-consumption period of its utility.
_FLAT_HOURS: dict[tuple[str, bool], tuple[float, float]] = {
    ("stuck", False): (26.0, 40.0), ("stuck", True): (26.0, 40.0),
    ("vacant", False): (30.0, 60.0), ("vacant", True): (80.0, 100.0),
}


def generate(*, electricity: int = 40, water: int = 10, days: int = 10, seed: int = 1) -> DataSet:
    """The data set: `electricity` + `water` meters polled every 15 min for `days` days."""
    rng = random.Random(seed)
    steps = days * STEPS_PER_DAY
    ds = DataSet(meters=[])
    all_series: list[_Series] = []
    for i in range(electricity + water):
        is_water = i >= electricity
        mid = f"W-{i - electricity + 1:03d}" if is_water else f"E-{i + 1:03d}"
        roll = i % 4 == 3  # every fourth meter wraps during the data set
        if is_water:
            modulus = 1e4 if roll else None
            values = _water(steps, rng, modulus)
            info = MeterInfo(mid, Utility.WATER, modulus, (Channel.VOLUME, Channel.FLOW))
            cumulative = Channel.VOLUME
        else:
            modulus = 1e5 if roll else None
            values = _electricity(mid, steps, rng, seed, modulus)
            info = MeterInfo(mid, Utility.ELECTRICITY, modulus, tuple(values), bidirectional=True)
            cumulative = Channel.ENERGY_IMPORT
        series = _Series(info, values, cumulative, [{} for _ in range(steps)], [Quality.NONE] * steps,
                         [3.0 + (37.0 if rng.random() < 0.02 else 0.0) for _ in range(steps)],
                         pristine=list(values[cumulative]))
        ds.meters.append(info)
        all_series.append(series)
        # Voltage sags inside the limits: not faults.
        if not is_water:
            for k in rng.sample(range(steps), 5):
                values[Channel.VOLTAGE_L1][k] = rng.uniform(195, 205)
        if roll:
            # Keep other faults a day away from the wrap, so a wrap is only ever a wrap.
            wrap = next((k for k in range(steps) if values[cumulative][k] >= modulus), None)  # type: ignore[operator]
            if wrap is not None:
                series.busy |= set(range(wrap - STEPS_PER_DAY, wrap + STEPS_PER_DAY))
        kinds = ["regression", "spike", "gap", "gap", "duplicate", "out_of_range", "out_of_range",
                 rng.choice(["future", "skew", "stale"]), rng.choice(["stuck", "vacant"])]
        if i % 5 == 0:
            kinds += ["regression", "regression"]
        if i % 7 == 0:
            kinds.append("tamper")
        rng.shuffle(kinds)
        zero_hours = 72.0 if is_water else 24.0
        injected = [k for k in kinds
                    if _inject(series, k, rng, ds.faults, _FLAT_HOURS.get((k, is_water), (0.0, 0.0)), zero_hours)]
        if injected.count("regression") >= 3 or "tamper" in injected:
            ds.inspections.add(mid)
        if roll:
            _wrap(series, modulus)  # type: ignore[arg-type]
    _deliver(ds, all_series, steps)
    return ds


def _wrap(series: _Series, modulus: float) -> None:
    """Registers hold their value modulo the modulus; the first read past a wrap is a rollover."""
    cum = series.values[series.cumulative]
    last = None
    for k, value in enumerate(cum):
        if math.isnan(value):
            continue
        wrapped = value % modulus
        if last is not None and k not in series.dropped and math.floor(value / modulus) > math.floor(last / modulus):
            _set(series, k, series.cumulative, Quality.ROLLOVER)
        if k not in series.dropped and not series.flags[k].get(series.cumulative, Quality.NONE) & Quality.REGRESSION:
            last = value
        cum[k] = wrapped


def _deliver(ds: DataSet, all_series: list[_Series], steps: int) -> None:
    for k in range(steps):
        ts = T0 + timedelta(seconds=k * INTERVAL)
        batch: list[Reading] = []
        for series in all_series:
            info = series.info
            for r in series.extra.get(k, []):
                batch.append(r)
                ds.labels[label_key(r)] = Quality.DUPLICATE_CONFLICT
            if k in series.dropped:
                for ch in (series.cumulative,):
                    ds.truth[(info.meter_id, ch, ts)] = series.values[ch][k]
                continue
            received = ts + timedelta(seconds=series.received_offset[k])
            for ch, values in series.values.items():
                kind = Kind.INSTANTANEOUS if ch in _INSTANT else Kind.CUMULATIVE
                r = Reading(info.meter_id, ch, ts, values[k], kind, quality=series.quality[k], source=Source.MODBUS,
                            received_at=received)
                batch.append(r)
                flag = series.flags[k].get(ch, Quality.NONE)
                if flag:
                    ds.labels[label_key(r)] = flag
                if ch is series.cumulative and k in series.dont_care:
                    ds.dont_care[label_key(r)] = series.dont_care[k]
        ds.batches.append(batch)


__all__ = ["DataSet", "Fault", "MeterInfo", "generate", "label_key"]
