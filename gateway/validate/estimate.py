"""Estimation of missing interval reads of a cumulative register (SPEC §3 `estimated`), by gap length.

Practice (domain notes §3.2, interop notes §2.1):

* `linear` — gaps up to a configurable length (default 3 h, Itron IEE's example; Claridge & Chen
  found it best for gaps of 1-6 h) are a straight line between the real reads around them.
* `like_day` — longer gaps follow the meter's own use on like days: the same weekday of the
  previous weeks (the hour-of-week profile is their mean, old weeks fading), Tuesday, Wednesday
  and Thursday standing in for one another in a fixed order, Saturday, Sunday and Monday only for
  themselves (W. Australia Metering Code 2012 App. 3 method 14 "Nearest Equivalent Day"). The
  shape is scaled so the estimates meet the real reads at both ends (Itron MetrixIDR "scaled to
  the actual data around the gap"): the consumption across the gap is always the metered one.
  An hour with no like day in the profile makes the whole gap linear (never a made-up shape).
* `flat` — one side known only: the register goes on at a given rate (Oracle's "flat load"). Never
  made by the validator; only on request (a bill that must be closed).

No estimate past the configured limit (default 168 h). Each estimate says how it was made
(`Estimate.note`, stored as the reading's note): the method, the real reads it was built from and
its parameters, e.g. ``estimate=like_day from=2026-03-02T17:00:00Z,2026-03-02T23:00:00Z like=mon
scale=1.0312``. The note starts with ``estimate=<method>`` (storage.boundary.estimate_method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from gateway.model.shown import decimals_of, round_shown
from gateway.validate.checks import US_PER_HOUR, hour_of_week

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LINEAR = "linear"
LIKE_DAY = "like_day"
FLAT = "flat"
#: Stores written before like-day estimation hold this method for profile-shaped estimates.
PROFILE = "profile"
METHODS = (LINEAR, LIKE_DAY, FLAT)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Which weekdays may stand in for each weekday, in order of preference (itself first).
LIKE_DAYS: tuple[tuple[int, ...], ...] = ((0,), (1, 2, 3), (2, 1, 3), (3, 2, 1), (4,), (5,), (6,))

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SLOTS = np.arange(168)
#: For each hour-of-week slot, the weekday of each like day in order of preference (padded with the
#: last), and the like day's slot at the same hour.
_LIKE_DAY_OF = np.array([[*LIKE_DAYS[s // 24], *[LIKE_DAYS[s // 24][-1]] * (3 - len(LIKE_DAYS[s // 24]))]
                         for s in range(168)], dtype=np.int64)
_LIKE_SLOTS = _LIKE_DAY_OF * 24 + (_SLOTS % 24)[:, None]


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated cumulative values at the missing boundaries of one gap, and how they were made."""

    ts: I64  # µs
    values: F64
    method: str  # LINEAR | LIKE_DAY | FLAT
    #: The real reads it was built from (µs): the two around the gap (one for `flat`).
    sources: tuple[int, ...] = ()
    #: Its parameters, as shown in the note (e.g. like="tue:wed", scale="1.0312").
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def note(self) -> str:
        """What the reading's note says: method, sources and parameters."""
        parts = [f"estimate={self.method}", "from=" + ",".join(iso_us(t) for t in self.sources)]
        return " ".join(parts + [f"{k}={v}" for k, v in self.params])


def iso_us(us: int) -> str:
    """µs since the epoch as ISO 8601 UTC with Z (exact: no float on the way)."""
    text = (_EPOCH + timedelta(microseconds=int(us))).isoformat()
    return text.replace("+00:00", "Z")


def boundaries(t0: int, t1: int, interval_us: int) -> I64:
    """The interval boundaries strictly between two reads: t0 + k x interval, k >= 1, short of t1
    by at least half an interval (a read that arrived a little late is not a missing one)."""
    k = max(0, math.ceil((t1 - t0 - interval_us / 2) / interval_us) - 1)
    return t0 + interval_us * np.arange(1, k + 1, dtype=np.int64)


def like_day_rates(profile: F64, mids: I64) -> tuple[F64, list[str]] | None:
    """The like-day rate of each time (µs) from an hour-of-week profile (168 mean rates, NaN where
    never seen), and which weekday stood in for which ('tue:wed' = Tuesday from Wednesdays).
    None if some time has no like day in the profile."""
    # The rate of each of the 168 slots from its first known like day, then one gather: a 7-day gap
    # has 672 boundaries and a fleet thousands of gaps.
    candidates = profile[_LIKE_SLOTS]
    first = np.argmax(np.isfinite(candidates), axis=1)  # 0 where none is known: NaN stays NaN
    table = candidates[_SLOTS, first]
    source = _LIKE_DAY_OF[_SLOTS, first]
    slots = hour_of_week(mids)
    rates = table[slots]
    if not np.isfinite(rates).all():
        return None
    pairs = np.unique((slots // 24) * 7 + source[slots]).tolist()
    return rates, [DAYS[d] if d == like else f"{DAYS[d]}:{DAYS[like]}" for d, like in (divmod(p, 7) for p in pairs)]


def estimate_gap(t0: int, v0: float, t1: int, v1: float, *, interval_us: int, modulus: float,
                 linear_us: float, profile: F64 | None, max_us: float = math.inf) -> Estimate:
    """Fill the gap between the real reads (t0, v0) and (t1, v1) (µs; cumulative values).

    Up to `linear_us` the fill is linear; beyond it like-day from `profile` (the meter's mean
    consumption rate per hour of week, 168 values, NaN where unknown), linear if that has no like
    day for some hour. A gap longer than `max_us` gets no estimates (empty). A register with a
    `modulus` (NaN if none) may wrap inside the gap: estimates wrap with it.
    """
    if t1 - t0 > max_us:
        return Estimate(np.empty(0, np.int64), np.empty(0), LINEAR, (t0, t1))
    ts = boundaries(t0, t1, interval_us)
    delta = v1 - v0
    if not math.isnan(modulus) and delta < 0 and -delta > modulus / 2:
        delta += modulus
    method = LINEAR
    params: list[tuple[str, str]] = [("linear_hours", f"{linear_us / US_PER_HOUR:g}")]
    fraction = (ts - t0) / (t1 - t0)
    if ts.size and t1 - t0 > linear_us and profile is not None:
        edges = np.concatenate(([t0], ts, [t1]))
        mids = edges[:-1] + (edges[1:] - edges[:-1]) // 2
        like = like_day_rates(profile, mids)
        if like is not None:
            weights = like[0] * (np.diff(edges) / US_PER_HOUR)
            total = float(weights.sum())
            if total > 0 and math.isfinite(total):
                fraction = np.cumsum(weights)[:-1] / total
                method = LIKE_DAY
                # scale: metered consumption / what the like days would have used.
                params = [("like", ",".join(like[1])), ("scale", f"{delta / total:.6g}"), *params]
    values = v0 + delta * fraction
    if not math.isnan(modulus):
        values = np.mod(values, modulus)
    return Estimate(ts, _shown(values, v0, v1), method, (t0, t1), tuple(params))


def flat_fill(t0: int, v0: float, until: int, *, rate_per_hour: float, interval_us: int, modulus: float,
              max_us: float = math.inf) -> Estimate:
    """Flat load: only the read (t0, v0) is known; the register goes on at `rate_per_hour` (e.g.
    the last interval's rate) at each interval boundary after t0 up to and including `until`
    (µs), no further than `max_us` after t0. On request only (a bill that must be closed)."""
    end = min(until, t0 + max_us)
    k = max(0, int((end - t0) // interval_us)) if math.isfinite(end) else 0
    ts = t0 + interval_us * np.arange(1, k + 1, dtype=np.int64)
    values = v0 + rate_per_hour * ((ts - t0) / US_PER_HOUR)
    if not math.isnan(modulus):
        values = np.mod(values, modulus)
    params = (("rate_per_hour", f"{rate_per_hour:g}"),)
    return Estimate(ts, _shown(values, v0, v0), FLAT, (t0,), params)


def _shown(values: F64, v0: float, v1: float) -> F64:
    # No finer than the register the reads show: 100.1 and 100.4 fill as 100.2, 100.3, not 100.19999999999999.
    decimals = max(decimals_of(v0), decimals_of(v1))
    return round_shown(values, np.full(values.shape, decimals, dtype=np.int64))


__all__ = ["DAYS", "FLAT", "LIKE_DAY", "LIKE_DAYS", "LINEAR", "METHODS", "PROFILE", "Estimate", "boundaries",
           "estimate_gap", "flat_fill", "iso_us", "like_day_rates"]
