"""The VEE checks written the plain way: one reading at a time, dicts and lists, no numpy.

This is the executable specification of `Validator` (a test holds the two to the same flags,
statuses and estimates on a labelled data set) and the naive baseline `bench/vee.py` measures
the vectorised path against. It gives the same results as `Validator.validate_frame` when a
batch holds at most one reading per series, which is how the pipeline delivers polls; with
several readings of one series in a batch, the Validator judges all of them against the
statistics from before the batch, and this class against statistics updated reading by reading.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gateway.model import Channel, Kind, Quality, Reading, Source, Status
from gateway.model.frame import from_us, to_us
from gateway.validate.checks import US_PER_HOUR
from gateway.validate.estimate import estimate_gap
from gateway.validate.state import HOURS_OF_WEEK, PROFILE_HALF_LIFE, RUNS
from gateway.validate.status import REJECT, SUSPECT, status_for

Settings = Callable[[str, Channel], dict[str, float | int | bool]]


@dataclass(slots=True)
class _Series:
    cfg: dict[str, float | int | bool]
    seen_ts: int | None = None
    seen_val: float = math.nan
    ref_ts: int | None = None
    ref_val: float = math.nan
    run_start: int | None = None
    moved: bool = False
    rates: deque[float] = field(default_factory=deque)
    count: int = 0
    since: int = 0
    first_ts: int | None = None
    center: float = math.nan
    spread: float = math.nan
    third: float = math.nan
    runs: deque[float] = field(default_factory=lambda: deque([0.0] * RUNS, maxlen=RUNS))
    usual_run: float = 0.0
    profile_sum: list[float] = field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)
    profile_n: list[float] = field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)


def _median(sorted_values: list[float]) -> float:
    # Written out (not statistics.median) so its rounding is the Validator's: (a + b) / 2.
    c = len(sorted_values)
    return (sorted_values[(c - 1) // 2] + sorted_values[c // 2]) / 2


class ReferenceValidator:
    """Per-reading VEE with the Validator's settings: `ReferenceValidator(validator.settings, window)`."""

    def __init__(self, settings: Settings, window: int = 672, stats_every: int | None = None) -> None:
        self._settings = settings
        self._window = window
        self._every = stats_every or max(1, window // 8)
        self._series: dict[tuple[str, Channel], _Series] = {}

    def validate(self, readings: Sequence[Reading]) -> list[Reading]:
        """Flag one batch, reading by reading in arrival order; estimates follow the read that closes a gap."""
        out: list[Reading] = []
        batch_keys: dict[tuple[str, Channel, int], float] = {}
        for r in readings:
            out.extend(self._one(r, batch_keys))
        return out

    def _one(self, r: Reading, batch_keys: dict[tuple[str, Channel, int], float]) -> list[Reading]:
        key = (r.meter_id, r.channel)
        st = self._series.get(key)
        if st is None:
            st = self._series[key] = _Series(self._settings(r.meter_id, r.channel))
        cfg = st.cfg
        t, v = to_us(r.ts), r.value
        q = Quality(r.quality)
        # Duplicates: an exact repeat within the batch is dropped; another value conflicts.
        bkey = (r.meter_id, r.channel, t)
        conflict = False
        if bkey in batch_keys:
            first = batch_keys[bkey]
            if first == v or (math.isnan(first) and math.isnan(v)):
                return []
            conflict = True
        else:
            batch_keys[bkey] = v
        if st.seen_ts is not None and t == st.seen_ts and v != st.seen_val:
            conflict = True
        # Stateless: High/Low limits, time tolerance.
        if not math.isfinite(v) or v < cfg["low"] or v > cfg["high"]:
            q |= Quality.OUT_OF_RANGE
        if r.received_at is not None:
            lag = float(to_us(r.received_at) - t)
            future = lag < -cfg["future_us"]
            if future:
                q |= Quality.FUTURE_TS
            if lag > cfg["stale_us"]:
                q |= Quality.STALE_TS
            if lag < -cfg["skew_us"] and not future:
                q |= Quality.CLOCK_SKEW
        if conflict:
            q |= Quality.DUPLICATE_CONFLICT
        estimates: list[Reading] = []
        if not conflict and (st.seen_ts is None or t > st.seen_ts):
            q, estimates = self._stateful(r, st, t, v, q)
        return [replace(r, quality=q, status=status_for(q), note=self._note(r, q, cfg)), *estimates]

    @staticmethod
    def _note(r: Reading, q: Quality, cfg: dict[str, float | int | bool]) -> str | None:
        return f"modulus={float(cfg['modulus'])!r}" if q & Quality.ROLLOVER else r.note

    def _stateful(self, r: Reading, st: _Series, t: int, v: float, q: Quality) -> tuple[Quality, list[Reading]]:
        cfg = st.cfg
        prev_t = st.seen_ts
        interval = int(cfg["interval_us"])
        if interval > 0 and prev_t is not None and float(t - prev_t) > interval * (1.0 + float(cfg["gap_tolerance"])):
            q |= Quality.GAP
        estimates: list[Reading] = []
        if r.kind is Kind.CUMULATIVE and not q & REJECT:
            q, estimates = self._cumulative(r, st, t, v, q, prev_t)
        st.seen_ts, st.seen_val = t, v
        return q, estimates

    def _cumulative(self, r: Reading, st: _Series, t: int, v: float, q: Quality,
                    prev_t: int | None) -> tuple[Quality, list[Reading]]:
        cfg = st.cfg
        modulus, resolution = float(cfg["modulus"]), float(cfg["resolution"])
        ref, ref_t = st.ref_val, st.ref_ts
        has_ref = ref_t is not None
        delta = v - ref
        wrapping = not math.isnan(modulus)
        if delta < -resolution and wrapping and -delta > modulus / 2:
            q |= Quality.ROLLOVER
            delta += modulus
        elif delta < -resolution or (wrapping and delta > modulus / 2):
            q |= Quality.REGRESSION
            return q, []  # not a reference: the state keeps the last good read
        rate = math.nan
        if has_ref:
            dt = float(t - ref_t)  # type: ignore[operator]
            if dt > 0:
                rate = delta / (dt / US_PER_HOUR)
        # Interval Spike Check.
        if math.isfinite(rate) and st.count >= cfg["spike_min_samples"] and math.isfinite(st.center) and \
                st.first_ts is not None and t - st.first_ts >= cfg["spike_min_us"]:
            threshold = max(max(st.center + cfg["spike_k"] * st.spread, cfg["spike_peak"] * st.third),
                            cfg["spike_min_rate"])
            if rate > threshold:
                q |= Quality.SPIKE
        # Flat runs.
        changed = not has_ref or abs(delta) > resolution
        if changed:
            if has_ref and st.run_start is not None:
                ended = float(ref_t - st.run_start)  # type: ignore[operator]
                if ended > 0:
                    st.runs.append(ended)
                    st.usual_run = sorted(st.runs)[RUNS - 2]
            st.run_start = t
            st.moved = st.moved or has_ref
        else:
            flat_for = float(t - st.run_start)  # type: ignore[operator]
            if st.moved and flat_for > max(cfg["flat_min_us"], cfg["flat_factor"] * st.usual_run):
                q |= Quality.FLATLINE
            if flat_for >= cfg["zero_us"]:
                q |= Quality.ZERO_CONSUMPTION
        # Learn from plain intervals.
        if math.isfinite(rate) and not q & Quality.SPIKE and not q & Quality.GAP:
            mid = t - int(float(t - ref_t) / 2)  # type: ignore[operator]
            slot = (mid // US_PER_HOUR + 72) % HOURS_OF_WEEK
            st.profile_sum[slot] += rate
            st.profile_n[slot] += 1.0
            if st.profile_n[slot] > PROFILE_HALF_LIFE:
                st.profile_sum[slot] *= 0.5
                st.profile_n[slot] *= 0.5
            if rate > 0:
                if st.first_ts is None:
                    st.first_ts = t
                st.rates.append(float(np.float32(rate)))  # the Validator keeps its windows in float32
                if len(st.rates) > self._window:
                    st.rates.popleft()
                st.count += 1
                st.since += 1
        if st.since >= self._every or (math.isnan(st.center) and st.count >= cfg["spike_min_samples"] and st.count >= 3):
            ordered = sorted(st.rates)
            st.center = _median(ordered)
            st.spread = 1.4826 * _median(sorted(abs(x - st.center) for x in ordered))
            st.third = ordered[max(len(ordered) - 3, 0)]
            st.since = 0
        estimates = self._estimates(r, st, t, v, q, ref, ref_t, prev_t)
        st.ref_ts, st.ref_val = t, v
        return q, estimates

    def _estimates(self, r: Reading, st: _Series, t: int, v: float, q: Quality, ref: float, ref_t: int | None,
                   prev_t: int | None) -> list[Reading]:
        cfg = st.cfg
        if not (q & Quality.GAP) or q & (SUSPECT | REJECT) or ref_t is None or ref_t != prev_t or \
                not cfg["estimate"] or t - ref_t > cfg["estimate_max_us"]:
            return []
        profile = [s / n if n > 0 else math.nan for s, n in zip(st.profile_sum, st.profile_n, strict=True)]
        est = estimate_gap(ref_t, ref, t, v, interval_us=int(cfg["interval_us"]), modulus=float(cfg["modulus"]),
                           linear_us=float(cfg["linear_us"]), profile=np.asarray(profile))
        return [Reading(r.meter_id, r.channel, from_us(int(ts)), float(value), Kind.CUMULATIVE,
                        quality=Quality.ESTIMATED, status=Status.ESTIMATED, source=Source.ESTIMATE,
                        received_at=r.received_at, note=est.note)
                for ts, value in zip(est.ts.tolist(), est.values.tolist(), strict=True)]


__all__ = ["ReferenceValidator"]
