"""Estimation of missing interval reads of a cumulative register (SPEC §3 `estimated`).

Practice (domain notes §3.2): short gaps are filled by linear interpolation between the real
reads around them (Oracle "Interval Interpolation Estimation", Itron IEE "Linear
Interpolation"; Claridge & Chen found it best for gaps of 1-6 h); longer gaps follow the
meter's own same-hour-of-week profile, scaled so the estimates meet the real reads at both
ends (Oracle "Interval Profile Estimation", Itron MetrixIDR model filling "scaled to the
actual data around the gap"). Estimates are only made for gaps bounded by real reads, so
the total consumption across the gap is always the metered one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.model.shown import decimals_of, round_shown
from gateway.validate.checks import US_PER_HOUR, hour_of_week

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LINEAR = "linear"
PROFILE = "profile"


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated cumulative values at the missing boundaries of one gap."""

    ts: I64  # µs
    values: F64
    method: str  # LINEAR | PROFILE


def boundaries(t0: int, t1: int, interval_us: int) -> I64:
    """The interval boundaries strictly between two reads: t0 + k x interval, k >= 1, short of t1
    by at least half an interval (a read that arrived a little late is not a missing one)."""
    k = max(0, math.ceil((t1 - t0 - interval_us / 2) / interval_us) - 1)
    return t0 + interval_us * np.arange(1, k + 1, dtype=np.int64)


def estimate_gap(t0: int, v0: float, t1: int, v1: float, *, interval_us: int, modulus: float,
                 linear_us: float, profile: F64 | None) -> Estimate:
    """Fill the gap between the real reads (t0, v0) and (t1, v1) (µs; cumulative values).

    `profile` is the meter's mean consumption rate per hour of week (168 values, NaN where
    unknown); without one, or for a gap up to `linear_us`, the fill is linear. A register
    with a `modulus` (NaN if none) may wrap inside the gap: estimates wrap with it.
    """
    ts = boundaries(t0, t1, interval_us)
    delta = v1 - v0
    if not math.isnan(modulus) and delta < 0 and -delta > modulus / 2:
        delta += modulus
    method = LINEAR
    fraction = (ts - t0) / (t1 - t0)
    if ts.size and t1 - t0 > linear_us and profile is not None and np.isfinite(profile).any():
        edges = np.concatenate(([t0], ts, [t1]))
        mids = edges[:-1] + (edges[1:] - edges[:-1]) // 2
        rates = profile[hour_of_week(mids)]
        # An hour of week the meter was never seen in gets its average rate.
        rates = np.where(np.isfinite(rates), rates, np.nanmean(profile))
        weights = rates * (np.diff(edges) / US_PER_HOUR)
        total = float(weights.sum())
        if total > 0 and math.isfinite(total):
            fraction = np.cumsum(weights)[:-1] / total
            method = PROFILE
    values = v0 + delta * fraction
    if not math.isnan(modulus):
        values = np.mod(values, modulus)
    # No finer than the register the two reads show: 100.1 and 100.4 fill as 100.2, 100.3, not 100.19999999999999.
    decimals = max(decimals_of(v0), decimals_of(v1))
    return Estimate(ts, round_shown(values, np.full(values.shape, decimals, dtype=np.int64)), method)


__all__ = ["LINEAR", "PROFILE", "Estimate", "boundaries", "estimate_gap"]
