"""Estimation by gap length (issue #24 item 6): linear up to the configured length (default 3 h),
like-day beyond (same weekday; Tue-Thu stand in for one another; Sat, Sun, Mon only for
themselves), scaled to meet both real reads; flat load on request; nothing past the limit
(168 h). Each estimate says its method, the real reads it was built from and its parameters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from gateway.model import Kind, Reading, Source
from gateway.validate.checks import US_PER_HOUR
from gateway.validate.estimate import estimate_gap, flat_fill, like_day_rates
from gateway.validate.thresholds import Thresholds, ThresholdTable
from gateway.validate.validator import Validator
from storage.boundary import estimate_method
from tests.unit.test_checks import STEP, T0, E, run

US = 1_000_000
I15 = 900 * US
DAY = 96  # intervals
T0_US = int(T0.timestamp()) * US  # a Monday 00:00 UTC


def rate(day: int, hour: float) -> float:
    """kWh per 15 min, a different shape each weekday (0 = Monday): a Saturday filled with a
    Friday's shape, or a Monday with a Tuesday's, would be visibly wrong."""
    peak = {0: 7, 1: 9, 2: 12, 3: 15, 4: 18, 5: 21, 6: 13}[day]
    return 0.05 + 0.002 * day + (0.4 if abs(hour - peak) < 2 else 0.0)


def weekly(weeks: int) -> list[float]:
    """A cumulative register (3 decimals) repeating the same week: its like days are exact."""
    steps = [round(rate((i // DAY) % 7, (i % DAY) / 4), 3) for i in range(weeks * 7 * DAY)]
    return [round(1000 + x, 3) for x in np.cumsum([0.0, *steps[1:]])]


def reads(values: list[float]) -> list[Reading]:
    return [Reading("M-1", E, T0 + i * STEP, v, Kind.CUMULATIVE, received_at=T0 + i * STEP + timedelta(seconds=3))
            for i, v in enumerate(values)]


def profile_of(days: dict[int, bool]) -> np.ndarray:
    """The hour-of-week profile (kWh/h) of `rate`, NaN on the weekdays marked False."""
    p = np.array([rate(h // 24, h % 24 + 0.5) * 4 for h in range(168)])
    for d, known in days.items():
        if not known:
            p[d * 24:(d + 1) * 24] = np.nan
    return p


def gap(values: list[float], lo: int, hi: int, validator: Validator | None = None) -> list[Reading]:
    """Run the stream with reads lo+1 .. hi-1 missing; the estimates made."""
    rs = reads(values)
    del rs[lo + 1:hi]
    out, _ = run(rs, validator or Validator(intervals={"M-1": 900}))
    return [r for r in out if r.source is Source.ESTIMATE]


def test_linear_is_the_default_up_to_three_hours() -> None:
    assert Thresholds().estimate_linear_hours == 3.0
    assert Thresholds().estimate_max_hours == 168.0


def test_a_long_gap_on_a_saturday_is_filled_from_saturdays_scaled_to_the_real_reads() -> None:
    values = weekly(3)
    lo, hi = 19 * DAY + 32, 19 * DAY + 80  # Saturday of week 3, 08:00 to 20:00 (12 h, the evening peak)
    est = gap(values, lo, hi)
    assert [r.ts for r in est] == [T0 + k * STEP for k in range(lo + 1, hi)]
    assert [r.value for r in est] == pytest.approx(values[lo + 1:hi], abs=1e-9)  # the like day, exactly
    note = est[0].note
    assert note is not None and {r.note for r in est} == {note}
    assert note.split() == ["estimate=like_day", "from=2026-03-21T08:00:00Z,2026-03-21T20:00:00Z", "like=sat",
                            "scale=1", "linear_hours=3"]
    assert estimate_method(est[0]) == "like_day"


def test_like_day_is_scaled_so_the_estimates_meet_both_real_reads() -> None:
    p = profile_of({})
    t0, t1 = T0_US + 5 * 24 * US_PER_HOUR, T0_US + 5 * 24 * US_PER_HOUR + 8 * US_PER_HOUR  # Saturday 00-08
    use = float(sum(rate(5, h / 4) for h in range(32)))
    est = estimate_gap(t0, 100.0, t1, 100.0 + 2 * use, interval_us=I15, modulus=np.nan, linear_us=3 * US_PER_HOUR,
                       profile=p)
    assert est.method == "like_day" and dict(est.params)["scale"] == "2"
    steps = np.diff([100.0, *est.values.tolist(), 100.0 + 2 * use])
    assert steps == pytest.approx([2 * rate(5, (k + 0.5) / 4) for k in range(32)], abs=1e-3)


def test_tuesday_to_thursday_stand_in_for_one_another() -> None:
    tuesday = T0_US + 1 * 24 * US_PER_HOUR
    mids = tuesday + np.arange(24, dtype=np.int64) * US_PER_HOUR + US_PER_HOUR // 2
    found = like_day_rates(profile_of({1: False}), mids)
    assert found is not None
    rates, like = found
    assert like == ["tue:wed"]
    assert rates.tolist() == pytest.approx([rate(2, h + 0.5) * 4 for h in range(24)])
    found = like_day_rates(profile_of({1: False, 2: False}), mids)
    assert found is not None and found[1] == ["tue:thu"]


@pytest.mark.parametrize("day", [0, 5, 6])  # Monday, Saturday, Sunday
def test_monday_saturday_and_sunday_stand_only_for_themselves(day: int) -> None:
    start = T0_US + day * 24 * US_PER_HOUR
    mids = start + np.arange(24, dtype=np.int64) * US_PER_HOUR
    assert like_day_rates(profile_of({day: False}), mids) is None
    # The gap is then linear: no shape made up from another kind of day.
    est = estimate_gap(start, 10.001, start + 12 * US_PER_HOUR, 22.001, interval_us=I15, modulus=np.nan,
                       linear_us=3 * US_PER_HOUR, profile=profile_of({day: False}))
    assert est.method == "linear" and est.values[:3].tolist() == [10.251, 10.501, 10.751]


def test_the_gap_length_chooses_the_method() -> None:
    p = profile_of({})
    t0 = T0_US + 2 * 24 * US_PER_HOUR
    kw: dict[str, Any] = {"interval_us": I15, "modulus": np.nan, "profile": p}
    assert estimate_gap(t0, 1.0, t0 + 3 * US_PER_HOUR, 2.0, linear_us=3 * US_PER_HOUR, **kw).method == "linear"
    assert estimate_gap(t0, 1.0, t0 + 3 * US_PER_HOUR + I15, 2.0, linear_us=3 * US_PER_HOUR,
                        **kw).method == "like_day"
    assert estimate_gap(t0, 1.0, t0 + 2 * US_PER_HOUR, 2.0, linear_us=1 * US_PER_HOUR, **kw).method == "like_day"


def test_the_configured_linear_length_is_used_by_the_validator() -> None:
    values = weekly(2)
    lo, hi = 9 * DAY + 40, 9 * DAY + 48  # Wednesday of week 2, 10:00 to 12:00 (2 h)
    assert {estimate_method(r) for r in gap(values, lo, hi)} == {"linear"}
    shorter = Validator(intervals={"M-1": 900}, thresholds=ThresholdTable(fleet={"estimate_linear_hours": 1.0}))
    est = gap(values, lo, hi, shorter)
    assert {estimate_method(r) for r in est} == {"like_day"}
    assert est[0].note is not None and "linear_hours=1" in est[0].note.split()


@pytest.mark.parametrize(("hours", "estimated"), [(168.0, 671), (168.25, 0)])
def test_nothing_past_the_limit_of_168_hours(hours: float, estimated: int) -> None:
    values = weekly(3)
    lo = 8 * DAY
    est = gap(values, lo, lo + int(hours * 4))
    assert len(est) == estimated
    t0 = T0_US
    kw: dict[str, Any] = {"interval_us": I15, "modulus": np.nan, "linear_us": 3 * US_PER_HOUR, "profile": profile_of({}),
          "max_us": 168 * US_PER_HOUR}
    assert estimate_gap(t0, 1.0, t0 + int(hours * US_PER_HOUR), 9.0, **kw).ts.size == estimated


def test_flat_load_goes_on_at_the_given_rate_from_the_one_known_read() -> None:
    est = flat_fill(T0_US, 100.5, T0_US + US_PER_HOUR, rate_per_hour=0.4, interval_us=I15, modulus=np.nan)
    assert est.method == "flat" and est.values.tolist() == [100.6, 100.7, 100.8, 100.9]
    assert est.note == "estimate=flat from=2026-03-02T00:00:00Z rate_per_hour=0.4"
    capped = flat_fill(T0_US, 1.0, T0_US + 200 * US_PER_HOUR, rate_per_hour=1.0, interval_us=I15, modulus=np.nan,
                       max_us=168 * US_PER_HOUR)
    assert capped.ts.size == 168 * 4 and int(capped.ts[-1]) == T0_US + 168 * US_PER_HOUR


def test_a_linear_estimate_names_its_real_reads() -> None:
    values = weekly(1)
    est = gap(values, 10, 14)
    assert [r.note for r in est] == ["estimate=linear from=2026-03-02T02:30:00Z,2026-03-02T03:30:00Z "
                                     "linear_hours=3"] * 3
