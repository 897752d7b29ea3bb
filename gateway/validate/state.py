"""What VEE remembers per series between batches, as numpy arrays indexed by series id.

Scalars (last reading, last good reference, flat-run start, robust statistics, thresholds)
live in one array per field over every series. Windows (the last `window` consumption rates
for the spike check, the last flat runs, the hour-of-week profile for estimation) exist only
for cumulative series, in 2-D arrays indexed by a compact row (`crow`). Nothing here is
global: one Validator owns one SeriesState.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.model.frame import NO_TS
from gateway.validate.checks import robust_stats

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
HOURS_OF_WEEK = 168
RUNS = 16  # flat runs remembered per series
PROFILE_HALF_LIFE = 8  # readings per hour-of-week slot before older weeks count half


@dataclass(frozen=True, slots=True)
class _Field:
    dtype: type
    fill: Any


# Per-series scalars: name -> (dtype, value of a series never seen).
SERIES_FIELDS: dict[str, _Field] = {
    # the last in-order reading, whatever its flags: duplicates, gaps, event transitions
    "seen_ts": _Field(np.int64, NO_TS),
    "seen_val": _Field(np.float64, np.nan),
    "seen_flags": _Field(np.int64, 0),
    # the last good cumulative reading: the reference of regression, rollover and consumption
    "ref_ts": _Field(np.int64, NO_TS),
    "ref_val": _Field(np.float64, np.nan),
    "run_start": _Field(np.int64, NO_TS),  # ts of the first read at the current value
    "moved": _Field(np.bool_, False),  # has ever changed (a never-moving register is not "flat")
    "crow": _Field(np.int64, -1),  # row in the cumulative windows, -1 for instantaneous series
    # thresholds, resolved once per series (see Validator._resolve)
    "resolution": _Field(np.float64, 0.0),
    "spike_k": _Field(np.float64, np.inf),
    "spike_peak": _Field(np.float64, np.inf),
    "spike_min_rate": _Field(np.float64, np.inf),
    "spike_min_samples": _Field(np.int64, 0),
    "spike_min_us": _Field(np.float64, 0.0),
    "flat_min_us": _Field(np.float64, np.inf),
    "flat_factor": _Field(np.float64, 1.0),
    "zero_us": _Field(np.float64, np.inf),
    "gap_tolerance": _Field(np.float64, 0.5),
    "future_us": _Field(np.float64, np.inf),
    "stale_us": _Field(np.float64, np.inf),
    "skew_us": _Field(np.float64, np.inf),
    "low": _Field(np.float64, -np.inf),
    "high": _Field(np.float64, np.inf),
    "linear_us": _Field(np.float64, 0.0),
    "estimate_max_us": _Field(np.float64, 0.0),
    "modulus": _Field(np.float64, np.nan),
    "interval_us": _Field(np.int64, 0),
    "estimate": _Field(np.bool_, False),  # the meter's interval is long enough to estimate its gaps
}

# Per cumulative series (row = crow).
WINDOW_FIELDS: dict[str, _Field] = {
    "count": _Field(np.int64, 0),  # rates pushed into the spike window, ever
    "first_ts": _Field(np.int64, NO_TS),  # ts of the first rate pushed (history length)
    "since": _Field(np.int64, 0),  # rates pushed since the statistics were computed
    "center": _Field(np.float64, np.nan),  # median rate
    "spread": _Field(np.float64, np.nan),  # 1.4826 x MAD
    "third": _Field(np.float64, np.nan),  # third-highest rate
    "min_samples": _Field(np.int64, 0),  # copy of the series' spike_min_samples
    "runs_n": _Field(np.int64, 0),
    "usual_run": _Field(np.float64, 0.0),  # µs: the meter's usual longest flat run
}


def _grow(arr: npt.NDArray[Any], capacity: int, fill: Any) -> npt.NDArray[Any]:
    shape = (capacity, *arr.shape[1:])
    out = np.full(shape, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def _grow_rows(arr: npt.NDArray[Any], capacity: int, used: int) -> npt.NDArray[Any]:
    """`arr` with room for `capacity` rows: its first `used` rows, then zeros. The windows are
    tens of MB: zeros come from the allocator as untouched pages, which the system zeroes on
    first write, so rows nobody uses yet cost no memory and no pass to fill them."""
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[:used] = arr[:used]
    return out


class SeriesState:
    """Per-series arrays; `ensure(n)` makes room for series ids below n (new ones start empty)."""

    def __init__(self, window: int) -> None:
        if window < 3:
            msg = f"spike window must hold at least 3 intervals, got {window}"
            raise ValueError(msg)
        self.window = window
        self.size = 0  # series with state
        self.crows = 0  # cumulative series with windows
        self.expected = 0  # cumulative series known to the validator (window rows may come later)
        self.s: dict[str, npt.NDArray[Any]] = {k: np.full(0, f.fill, f.dtype) for k, f in SERIES_FIELDS.items()}
        self.w: dict[str, npt.NDArray[Any]] = {k: np.full(0, f.fill, f.dtype) for k, f in WINDOW_FIELDS.items()}
        # float32: rates need 7 digits, not 16, and the windows are most of VEE's memory
        # (10,000 meters x 2 registers x 672 intervals = 54 MB). Statistics run in float64.
        # Slots past a window's count are unused (zeros, never read as rates).
        self.rates: npt.NDArray[np.float32] = np.zeros((0, window), dtype=np.float32)
        self.runs: F64 = np.zeros((0, RUNS))
        # [..., 0] sum of rates, [..., 1] how many: one fancy index updates both.
        self.profile_acc: F64 = np.zeros((0, HOURS_OF_WEEK, 2))

    def ensure(self, n: int) -> None:
        cap = len(self.s["seen_ts"])
        if n > cap:
            cap = max(n, 2 * cap, 64)
            self.s = {k: _grow(a, cap, SERIES_FIELDS[k].fill) for k, a in self.s.items()}
        self.size = max(self.size, n)

    def cumulative_rows(self, series: I64) -> I64:
        """The window rows of these series, allocating rows for series that have none yet."""
        crow = self.s["crow"]
        rows = crow[series]
        new = rows < 0
        if new.any():
            fresh = np.unique(series[new])
            start, end = self.crows, self.crows + fresh.size
            crow[fresh] = np.arange(start, end)
            self._make_window_rows(start, end)
            self.w["min_samples"][crow[fresh]] = self.s["spike_min_samples"][fresh]
            rows = crow[series]
        return rows

    def expect_cumulative(self, more: int) -> None:
        """`more` cumulative series were learnt; their window rows come with their first reads.

        Room is reserved for twice the series known: growing copies every window (over 100 MB
        for 10,000 meters), while reserved rows are left untouched until handed out, so they
        cost address space, not memory."""
        self.expected += more
        if self.expected > len(self.w["count"]):
            self._grow_windows(2 * self.expected)

    def _grow_windows(self, capacity: int) -> None:
        self.w = {k: _grow(a, capacity, WINDOW_FIELDS[k].fill) for k, a in self.w.items()}
        self.rates = _grow_rows(self.rates, capacity, self.crows)
        self.runs = _grow_rows(self.runs, capacity, self.crows)
        self.profile_acc = _grow_rows(self.profile_acc, capacity, self.crows)

    def _make_window_rows(self, start: int, end: int) -> None:
        """Window rows [start, end) for new cumulative series: room, then their empty state."""
        cap = len(self.w["count"])
        if end > cap:
            self._grow_windows(max(end, 2 * cap, 64))
        self.crows = end  # their windows are still zeros: empty (see refresh_stats for the rates)

    # -- windows ------------------------------------------------------------------------
    def push_rates(self, rows: I64, rates: F64, ts: I64) -> None:
        """Append consumption rates to the spike windows (rows grouped, in time order)."""
        if rows.size:
            fresh = self.w["first_ts"][rows] == NO_TS
            if fresh.any():
                # Rows are in time order, so the first of a fresh row wins when written last.
                self.w["first_ts"][rows[fresh][::-1]] = ts[fresh][::-1]
            # A rate past float32's range (garbage no check rejected) is kept as inf, which the
            # statistics sort last; numpy would warn about the cast.
            with np.errstate(over="ignore"):
                _ring_push(self.rates, self.w["count"], rows, rates, since=self.w["since"])

    def refresh_stats(self, every: int) -> None:
        """Recompute median, MAD and third-highest of windows that gained `every` rates, or that
        just reached the minimum to be judged."""
        w = self.w
        n = self.crows
        due = (w["since"][:n] >= every) | (np.isnan(w["center"][:n]) & (w["count"][:n] >= w["min_samples"][:n]) &
                                           (w["count"][:n] >= 3))
        rows = np.flatnonzero(due)
        if rows.size == 0:
            return
        counts = np.minimum(w["count"][rows], self.window)
        width = int(counts.max())
        # The ring only wraps once full, so the first `width` columns hold every rate of a partly
        # filled window. Slots never written are zeros in the state: NaN here (a copy), which
        # robust_stats sorts last.
        windows = self.rates[rows, :width] if width < self.window else self.rates[rows]
        windows[np.arange(width) >= counts[:, None]] = np.nan
        center, spread, third = robust_stats(windows, counts)
        w["center"][rows] = center
        w["spread"][rows] = spread
        w["third"][rows] = third
        w["since"][rows] = 0

    def push_runs(self, rows: I64, durations: F64) -> None:
        """Remember completed flat runs (µs) and update each touched series' usual run: the
        second-longest of its last RUNS runs (a high percentile that one odd run cannot move)."""
        if rows.size == 0:
            return
        _ring_push(self.runs, self.w["runs_n"], rows, durations)
        touched = np.unique(rows)
        self.w["usual_run"][touched] = np.partition(self.runs[touched], RUNS - 2, axis=1)[:, RUNS - 2]

    def add_profile(self, rows: I64, slots: I64, rates: F64) -> None:
        """Add consumption rates to the hour-of-week profiles; old weeks fade (halved past
        PROFILE_HALF_LIFE readings in a slot) so the profile follows the seasons."""
        if rows.size == 0:
            return
        # Flat indices: one-dimensional fancy indexing is several times faster than (row, slot).
        acc = self.profile_acc.reshape(-1)
        at = (rows * HOURS_OF_WEEK + slots) * 2
        if rows.size > 1 and bool((rows[1:] == rows[:-1]).any()):
            # A series twice in the batch may hit one slot twice: only ufunc.at adds both.
            np.add.at(acc, at, rates)
            np.add.at(acc, at + 1, 1.0)
            n = acc[at + 1]
        else:
            acc[at] += rates
            n = acc[at + 1] + 1.0
            acc[at + 1] = n
        full = n > PROFILE_HALF_LIFE
        if full.any():
            acc[at[full]] *= 0.5
            acc[at[full] + 1] *= 0.5

    def profile(self, row: int) -> F64:
        """Mean rate per hour of week of one cumulative series; NaN where it has never been seen."""
        total, n = self.profile_acc[row, :, 0], self.profile_acc[row, :, 1]
        return np.where(n > 0, total / np.where(n > 0, n, 1.0), np.nan)


def _ring_push(ring: npt.NDArray[np.floating], counts: I64, rows: I64, values: F64,
               since: I64 | None = None) -> None:
    """Write values into per-row ring buffers; rows must be grouped (equal rows adjacent)."""
    width = ring.shape[1]
    distinct = rows[1:] != rows[:-1]
    if distinct.all():
        # One value per row (the usual batch): no ranks within a row to work out.
        at = counts[rows]
        ring.reshape(-1)[rows * width + at % width] = values
        counts[rows] = at + 1
        if since is not None:
            since[rows] += 1
        return
    starts = np.flatnonzero(np.concatenate(([True], distinct)))
    sizes = np.diff(np.append(starts, rows.size))
    rank = np.arange(rows.size) - np.repeat(starts, sizes)
    ring.reshape(-1)[rows * width + (counts[rows] + rank) % width] = values
    counts[rows[starts]] += sizes
    if since is not None:
        since[rows[starts]] += sizes


__all__ = ["HOURS_OF_WEEK", "RUNS", "SERIES_FIELDS", "WINDOW_FIELDS", "SeriesState"]
