"""Vectorised VEE checks. Each takes numpy arrays of one batch and returns Quality bits (int64);
none loops over readings in Python.

Rows are grouped by series (one meter's channel) and sorted by ts inside a group. `prev`
holds, for each row, the reference value of the same series (the previous good read, from
the batch or from the stored history), NaN when there is none. Threshold arguments are
per-row arrays (gathered from per-series threshold arrays) or scalars.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.model.readings import Quality

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
Num = F64 | float

US_PER_HOUR = 3_600_000_000
ROLLOVER = int(Quality.ROLLOVER)
REGRESSION = int(Quality.REGRESSION)


def _bits(mask: B, flag: Quality) -> I64:
    # Flags are rare: zeros and a masked store cost half of np.where(mask, flag, 0).
    out = np.zeros(np.shape(mask), dtype=np.int64)
    out[mask] = int(flag)
    return out


def regression_and_rollover(values: F64, prev: F64, modulus: F64, resolution: Num = 1e-6) -> I64:
    """Negative Consumption Check of a cumulative register, unless it is a rollover at the modulus.

    A drop bigger than half the modulus is a wrap (consumption = cur + modulus - prev,
    flagged ROLLOVER, not suspect: SAP IS-U "register reset" validation). Any other drop
    beyond the register's resolution is REGRESSION, and so is a *rise* of more than half the
    modulus: no meter uses half its register in one read, so that is a register that went
    backwards across zero. `modulus` is NaN where the register does not wrap.
    """
    delta = values - prev
    dropped = delta < -resolution  # NaN prev compares False: first reading of a series
    wrapping = ~np.isnan(modulus)
    wraps = dropped & wrapping & (-delta > modulus / 2)
    back = wrapping & (delta > modulus / 2)
    return _bits(wraps, Quality.ROLLOVER) | _bits((dropped & ~wraps) | back, Quality.REGRESSION)


def consumption(values: F64, prev: F64, modulus: F64) -> F64:
    """Delta of a cumulative register across a rollover; NaN where there is no previous value."""
    delta = values - prev
    wrapped = (delta < 0) & ~np.isnan(modulus) & (-delta > modulus / 2)
    return np.where(wrapped, delta + modulus, delta)


def out_of_range(values: F64, low: Num, high: Num) -> I64:
    """High/Low Limit: OUT_OF_RANGE where a value is NaN, infinite or outside its channel's limits
    (pass -inf / +inf for "no limit")."""
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    return _bits(bad, Quality.OUT_OF_RANGE)


def clock(ts: I64, received: I64, future_us: Num, stale_us: Num, skew_us: Num) -> I64:
    """Time tolerance (IESO): the device's timestamp against the gateway's receive time (both µs).

    FUTURE_TS: measured more than `future_us` after it was received; CLOCK_SKEW: more than
    `skew_us` after it was received but not yet FUTURE_TS (the device clock runs ahead: a
    warning); STALE_TS: received more than `stale_us` after it was measured. A clock that runs
    behind cannot be told from a late delivery (a broker holding messages through an outage),
    so only STALE_TS judges that side.
    """
    lag = (received - ts).astype(np.float64)
    future = lag < -future_us
    stale = lag > stale_us
    skew = (lag < -skew_us) & ~future
    return _bits(future, Quality.FUTURE_TS) | _bits(stale, Quality.STALE_TS) | _bits(skew, Quality.CLOCK_SKEW)


def gap(ts: I64, prev_ts: I64, interval_us: I64, tolerance: Num) -> I64:
    """Gap Check (Itron), intervals found vs expected (IESO): GAP where more than (1 + tolerance)
    intervals passed since the series' previous reading. `interval_us` 0 = not interval data."""
    known = (interval_us > 0) & (prev_ts != np.iinfo(np.int64).min)
    missing = (ts - prev_ts).astype(np.float64) > interval_us * (1.0 + tolerance)
    return _bits(known & missing, Quality.GAP)


def spike(rate: F64, eligible: B, center: F64, spread: F64, third: F64, k: Num, peak_factor: Num,
          min_rate: Num) -> I64:
    """Interval Spike Check with robust statistics of the meter's own recent intervals.

    SPIKE where the consumption rate is above all three of: median + k x 1.4826 x MAD (the
    robust z, `spread` = 1.4826 x MAD), `peak_factor` x the window's third-highest rate
    (Oracle's highest-vs-third-highest cross-check, so the evening peak is not a spike), and
    `min_rate` (tiny loads never spike).
    """
    threshold = np.maximum(np.maximum(center + k * spread, peak_factor * third), min_rate)
    return _bits(eligible & (rate > threshold), Quality.SPIKE)


def robust_stats(window: npt.NDArray[np.floating], counts: I64) -> tuple[F64, F64, F64]:
    """Median, 1.4826 x MAD and third-highest value of each row's first `counts` entries.

    Rows are windows of different fill; NaN marks unused slots. One sort per statistic gives
    every row's order statistics at once (NaN sorts last), so rows are never visited one by one.
    """
    rows = np.arange(window.shape[0])
    c = np.maximum(counts, 1)
    lo, hi = (c - 1) // 2, c // 2
    ordered = np.sort(window, axis=1).astype(np.float64)  # windows may be float32; the arithmetic is not
    median = (ordered[rows, lo] + ordered[rows, hi]) / 2
    third = ordered[rows, np.maximum(c - 3, 0)]
    deviation = np.sort(np.abs(ordered - median[:, None]), axis=1)
    mad = (deviation[rows, lo] + deviation[rows, hi]) / 2
    return median, 1.4826 * mad, third


# -- helpers for per-series groups inside a batch ------------------------------------------

def group_firsts(keys: I64) -> B:
    """True on the first row of each run of equal keys (rows are grouped by key)."""
    first = np.ones(keys.shape, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return first


def group_lasts(keys: I64) -> B:
    last = np.ones(keys.shape, dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return last


def shifted(values: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
    """values[i - 1] at row i (fill at row 0)."""
    out = np.empty_like(values)
    if out.size:
        out[0] = fill
        out[1:] = values[:-1]
    return out


def group_start_index(first: B) -> I64:
    """For each row, the index of the first row of its group."""
    idx = np.arange(first.size, dtype=np.int64)
    return np.maximum.accumulate(np.where(first, idx, 0))


def last_before(mask: B, first: B) -> I64:
    """For each row, the index of the last earlier row of the same group where `mask` holds; -1 if none."""
    idx = np.arange(mask.size, dtype=np.int64)
    upto: I64 = np.maximum.accumulate(np.where(mask, idx, -1)) if mask.size else idx
    before: I64 = shifted(upto, -1)  # type: ignore[assignment]
    return np.where(before >= group_start_index(first), before, -1)


def hour_of_week(ts_us: I64) -> I64:
    """0 = Monday 00:00-01:00 UTC ... 167 = Sunday 23:00 (1970-01-01 was a Thursday: +72 h)."""
    return (ts_us // US_PER_HOUR + 72) % 168


__all__ = [
    "US_PER_HOUR",
    "clock",
    "consumption",
    "gap",
    "group_firsts",
    "group_lasts",
    "group_start_index",
    "hour_of_week",
    "last_before",
    "out_of_range",
    "regression_and_rollover",
    "robust_stats",
    "shifted",
    "spike",
]
