"""The shortcuts inside the vectorised Validator give exactly what the plain checks give.

- clock and gap checks run their per-series thresholds only on the rows past the loosest
  threshold of the fleet: a fleet whose series have different thresholds (or none) must still be
  judged series by series;
- spike windows are zeros where nothing was pushed yet: statistics count only pushed rates;
- ring buffers take one value per row (the usual batch) or several, with the same result;
- window rows are reserved ahead and grown by copying: nothing pushed before is lost.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from gateway.model import Channel, Kind, Quality, Reading, Source, Utility
from gateway.normalise.frame import ReadingFrame
from gateway.validate.reference import ReferenceValidator
from gateway.validate.state import SeriesState, _ring_push
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator
from tests.unit.test_checks import STEP, T0

E, VOL = Channel.ENERGY_IMPORT, Channel.VOLUME

#: Lags (receive time - ts, s) on both sides of every clock threshold used below.
LAGS = (3.0, -20.0, -40.0, -90.0, -200.0, -400.0, 1800.0, 4000.0, 8 * 86400.0)
#: Polls skipped before a read (15-min interval): on both sides of every gap tolerance used below.
SKIPS = (0, 1, 2, 3, 4)


def mixed_fleet(table: ThresholdTable) -> tuple[Validator, ReferenceValidator]:
    meters = ("E-1", "E-2", "W-1", "W-2")
    validator = Validator(intervals={m: 900 for m in meters} | {"E-2": 0},
                          utilities={"W-1": Utility.WATER, "W-2": Utility.WATER}, thresholds=table)
    return validator, ReferenceValidator(validator.settings)


def rounds(count: int) -> list[list[Reading]]:
    """Every meter read in each round, with its own lag and its own missed polls."""
    out, pos = [], dict.fromkeys(("E-1", "E-2", "W-1", "W-2"), 0)
    for r in range(count):
        batch = []
        for k, (meter, channel) in enumerate((("E-1", E), ("E-2", E), ("W-1", VOL), ("W-2", VOL))):
            pos[meter] += 1 + SKIPS[(r + k) % len(SKIPS)]
            ts = T0 + pos[meter] * STEP
            lag = LAGS[(r + 2 * k) % len(LAGS)]
            batch.append(Reading(meter, channel, ts, 100.0 + pos[meter], Kind.CUMULATIVE,
                                 received_at=None if (r + k) % 7 == 0 else ts + timedelta(seconds=lag)))
        out.append(batch)
    return out


Row = tuple[str, datetime, Quality, Source]


def judged(batches: list[list[Reading]], table: ThresholdTable) -> tuple[list[Row], list[Row]]:
    """(meter, ts, flags, source) of every row out of the Validator, and out of the reference."""
    validator, reference = mixed_fleet(table)
    got: list[Row] = []
    want: list[Row] = []
    for batch in batches:
        frame, _ = validator.validate_frame(ReadingFrame.from_readings(batch, validator.series))
        got += sorted((r.meter_id, r.ts, r.quality, r.source) for r in frame.to_readings(validator.series))
        want += sorted((r.meter_id, r.ts, r.quality, r.source) for r in reference.validate(batch))
    return got, want


@pytest.mark.parametrize("table", [
    ThresholdTable(),
    # water far stricter than electricity on every time threshold
    ThresholdTable(utilities={Utility.WATER: {"stale_hours": 1.0, "future_seconds": 100.0, "skew_seconds": 30.0,
                                              "gap_tolerance": 2.5}}),
    # electricity stricter, and a threshold that flags nothing (NaN) on water
    ThresholdTable(utilities={Utility.ELECTRICITY: {"stale_hours": 1.0, "skew_seconds": 10.0, "gap_tolerance": 0.2},
                              Utility.WATER: {"stale_hours": math.nan, "future_seconds": math.nan,
                                              "gap_tolerance": math.nan}}),
], ids=["defaults", "water-strict", "electricity-strict-water-nan"])
def test_clock_and_gap_judge_each_series_by_its_own_thresholds(table: ThresholdTable) -> None:
    got, want = judged(rounds(40), table)
    assert got == want
    seen = Quality.NONE
    for _, _, quality, _ in got:
        seen |= quality
    # the data reach every flag the shortcut could miss
    for flag in (Quality.GAP, Quality.STALE_TS, Quality.FUTURE_TS, Quality.CLOCK_SKEW):
        assert seen & flag, flag


def test_spike_statistics_count_only_the_rates_pushed() -> None:
    state = SeriesState(window=16)
    state.ensure(2)
    state.s["spike_min_samples"][:] = 3
    rows = state.cumulative_rows(np.array([0, 1]))
    pushed = [5.0, 1.0, 4.0, 2.0, 3.0]
    for i, rate in enumerate(pushed):
        state.push_rates(rows[:1], np.array([rate]), np.array([i], dtype=np.int64))
    state.refresh_stats(every=1)
    w = state.w
    assert w["center"][rows[0]] == 3.0  # the median of the five, not of five rates and eleven empty slots
    assert w["third"][rows[0]] == 3.0
    assert w["spread"][rows[0]] == pytest.approx(1.4826 * 1.0)
    assert math.isnan(w["center"][rows[1]])  # nothing pushed: nothing to judge by


def test_a_full_window_keeps_its_last_rates() -> None:
    state = SeriesState(window=4)
    state.ensure(1)
    row = state.cumulative_rows(np.array([0]))
    for i, rate in enumerate([100.0, 1.0, 2.0, 3.0, 4.0, 5.0]):
        state.push_rates(row, np.array([rate]), np.array([i], dtype=np.int64))
    state.refresh_stats(every=1)
    assert state.w["center"][row[0]] == 3.5  # median of 2, 3, 4, 5: 100 and 1 were pushed out


def test_a_rate_past_float32_is_kept_as_infinity_without_a_warning() -> None:
    # Garbage a check has not rejected can give a rate of 1e300 kWh/h; the windows are float32.
    # The test suite turns warnings into errors, as hypothesis found with such a fleet.
    state = SeriesState(window=4)
    state.ensure(1)
    row = state.cumulative_rows(np.array([0]))
    for i, rate in enumerate([1.0, 1e300, 2.0]):
        state.push_rates(row, np.array([rate]), np.array([i], dtype=np.int64))
    assert state.rates[row[0], :3].tolist() == [1.0, math.inf, 2.0]


def test_ring_push_one_value_per_row_or_several_gives_the_same_rings() -> None:
    rows = np.array([0, 0, 1, 2, 2, 2], dtype=np.int64)
    values = np.arange(1.0, 7.0)
    together, counts = np.zeros((3, 4)), np.array([3, 0, 1], dtype=np.int64)
    _ring_push(together, counts, rows, values)
    apart, counts_apart = np.zeros((3, 4)), np.array([3, 0, 1], dtype=np.int64)
    for i in range(len(rows)):  # one value per row at a time: the fast path
        _ring_push(apart, counts_apart, rows[i:i + 1], values[i:i + 1])
    assert np.array_equal(together, apart) and np.array_equal(counts, counts_apart)
    assert counts.tolist() == [5, 1, 4]


def test_windows_survive_growing_past_what_was_reserved() -> None:
    state = SeriesState(window=8)
    state.ensure(500)
    state.expect_cumulative(1)  # reserves room for two series only
    first = state.cumulative_rows(np.array([7]))
    for i, rate in enumerate([2.0, 4.0, 6.0]):
        state.push_rates(first, np.array([rate]), np.array([i], dtype=np.int64))
    state.add_profile(first, np.array([5]), np.array([2.0]))
    more = state.cumulative_rows(np.arange(100, 400))  # far past the reservation: the windows grow
    assert len(state.w["count"]) >= 301 and state.crows == 301
    state.s["spike_min_samples"][7] = 3
    state.w["min_samples"][first] = 3
    state.refresh_stats(every=1)
    assert state.w["center"][first[0]] == 4.0 and state.w["count"][first[0]] == 3
    assert state.profile(int(first[0]))[5] == 2.0
    assert np.all(state.rates[more] == 0) and np.all(state.profile_acc[more] == 0)  # new rows start empty
