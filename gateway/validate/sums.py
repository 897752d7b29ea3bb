"""Sum checks (issue 24 items 1 and 2): parts that must add up to a register's advance.

- Sum check (Oracle D2-SUM-CHK "interval MC vs scalar MC", Connexo `MeterAdvanceValidator`): the
  consumption of a load profile's intervals inside a window equals the advance of the cumulative
  register read at the window's ends.
- TOU sum check (Oracle's TOU registers vs a "check" register): the advances of the time-of-use
  registers `energy_import_t1..t4` add up to the advance of `energy_import` (the same for export).

Both compare advances, never absolute values: a tariff register started at another reading than the
total (a meter exchanged, a tariff added later) still adds up from then on. The tolerance is
max(sum_tolerance x |register advance|, sum_resolutions x the register's resolution) (domain.md
§3.3: max(1 %, 2 x resolution)); an advance within it passes.

Everything is numpy over a batch; nothing here loops over readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.validate.checks import F64, I64, B, Num, group_firsts, shifted

#: Float noise of two subtractions: a difference of exactly the tolerance passes.
_NOISE = 1e-9


def tolerance(advance: F64, resolution: Num, rel: Num, steps: Num) -> F64:
    """How far the parts may differ from the register's advance."""
    return np.maximum(rel * np.abs(advance), steps * resolution)


def mismatch(advance: F64, parts: F64, resolution: Num, rel: Num, steps: Num) -> B:
    """Windows whose parts (interval sum, or TOU advances) differ from the register's advance by more
    than the tolerance. NaN on either side (no reference) is never a mismatch."""
    diff = np.abs(advance - parts)
    allowed = tolerance(advance, resolution, rel, steps)
    with np.errstate(invalid="ignore"):
        return np.isfinite(diff) & (diff > allowed * (1 + _NOISE) + _NOISE * np.abs(advance))


def deltas_of_cumulative(group: I64, value: F64) -> F64:
    """Interval consumption from a load profile that samples the cumulative register each interval
    (DLMS 1-0:99.1.0 capturing 1-0:1.8.0): each row minus the row before in its group (rows grouped,
    in time order), NaN on a group's first row (its interval starts before what is known)."""
    first = group_firsts(group)
    return np.where(first, np.nan, value - shifted(value, np.nan))  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class WindowSums:
    """Per window: the interval consumption inside it and how many intervals it held."""

    total: F64
    count: I64


def window_sums(interval_group: I64, interval_end: I64, interval_value: F64,
                window_group: I64, window_start: I64, window_end: I64) -> WindowSums:
    """Sum of the interval rows whose end lies in (start, end] of each window of the same group.

    An interval row is the consumption of (end - interval, end]: the convention of DLMS load
    profiles and of this gateway's readings (a value is stamped when it was measured). Intervals
    and windows may come in any order. One sort of the intervals and the window edges together
    and a running sum give every window at once: the sum of a window is the running sum at its end
    minus the one at its start.
    """
    n, w = interval_group.size, window_group.size
    group = np.concatenate([interval_group, window_group, window_group])
    ts = np.concatenate([interval_end, window_start, window_end])
    # At equal ts an interval sorts before a window's edges: one ending at a window's start is the
    # window before's, one ending at its end is this window's.
    edge = np.concatenate([np.zeros(n, np.int8), np.ones(2 * w, np.int8)])
    order = np.lexsort((edge, ts, group))
    values = np.concatenate([np.nan_to_num(interval_value.astype(np.float64)), np.zeros(2 * w)])
    counted = np.concatenate([np.ones(n, np.int64), np.zeros(2 * w, np.int64)])
    running = np.cumsum(values[order])
    counts = np.cumsum(counted[order])
    at = np.empty(order.size, dtype=np.int64)
    at[order] = np.arange(order.size)
    start, end = at[n:n + w], at[n + w:]
    return WindowSums(running[end] - running[start], counts[end] - counts[start])


@dataclass(frozen=True, slots=True)
class SumCheckResult:
    advance: F64  # the register's advance over each window
    intervals: F64  # the interval consumption inside it
    judged: B  # the window held every interval it should (a gap is not a sum failure)
    failed: B


def interval_sum_check(window_group: I64, window_start: I64, window_end: I64, register_start: F64,
                       register_end: F64, interval_us: I64, sums: WindowSums, resolution: Num, rel: Num,
                       steps: Num) -> SumCheckResult:
    """Sum check of windows between two register reads: judged only when the window holds
    (end - start) / interval intervals, so a missing interval is a gap (estimation's job), not a
    sum failure. `register_*` are the register's reads at the window's ends (its advance is their
    difference: pass the consumption across a rollover already worked out)."""
    advance = register_end - register_start
    expected = np.where(interval_us > 0, (window_end - window_start) // np.maximum(interval_us, 1), -1)
    judged = (sums.count == expected) & np.isfinite(advance) & (window_group >= 0)
    failed = judged & mismatch(advance, sums.total, resolution, rel, steps)
    return SumCheckResult(advance, sums.total, judged, failed)


__all__ = ["SumCheckResult", "WindowSums", "deltas_of_cumulative", "interval_sum_check", "mismatch", "tolerance",
           "window_sums"]
