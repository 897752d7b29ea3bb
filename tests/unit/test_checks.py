"""Each VEE check on series where it must fire and series where it must not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gateway.model import Channel, EventKind, Kind, Quality, Reading, Status, Utility
from gateway.validate import checks
from gateway.validate.status import status_for
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=15)
E, V = Channel.ENERGY_IMPORT, Channel.VOLTAGE_L1


def cumulative(values: Sequence[float], *, meter: str = "M-1", channel: Channel = E, start: int = 0,
               lag: float = 3.0) -> list[Reading]:
    return [Reading(meter, channel, T0 + (start + i) * STEP, v, Kind.CUMULATIVE,
                    received_at=T0 + (start + i) * STEP + timedelta(seconds=lag)) for i, v in enumerate(values)]


def household(days: float, *, base: float = 0.5, seed: int = 1, start_value: float = 1000.0) -> list[float]:
    """A cumulative register with a daily curve (evening peak three times the night) and noise."""
    rng = np.random.default_rng(seed)
    n = int(days * 96)
    hours = (np.arange(n) % 96) / 4
    curve = 0.35 + 0.55 * np.exp(-(((hours - 7.5) / 1.5) ** 2)) + 0.9 * np.exp(-(((hours - 19.5) / 2.0) ** 2))
    steps = base * curve * rng.normal(1.0, 0.1, n).clip(0.2) * 0.25
    return list(start_value + np.cumsum(steps))


def run(readings: Sequence[Reading], validator: Validator | None = None,
        one_by_one: bool = True) -> tuple[list[Reading], list]:  # type: ignore[type-arg]
    """Feed readings as the pipeline does (one poll per batch) and collect everything."""
    v = validator or Validator(intervals={"M-1": 900, "W-1": 900})
    out, events = [], []
    for batch in ([[r] for r in readings] if one_by_one else [list(readings)]):
        o, e = v.validate(batch)
        out += o
        events += e
    return out, events


def flagged(out: Sequence[Reading], flag: Quality) -> list[int]:
    """Indices (in ts order, estimates excluded) of readings carrying `flag`."""
    real = [r for r in out if not r.quality & Quality.ESTIMATED]
    return [i for i, r in enumerate(real) if r.quality & flag]


# -- regression and rollover -------------------------------------------------------------

def test_regression_fires_on_a_drop_and_not_on_noise_below_the_resolution() -> None:
    out, events = run(cumulative([100.0, 100.5, 100.4995, 99.0, 101.0]))
    assert flagged(out, Quality.REGRESSION) == [3]  # 0.0005 below is within the 0.001 resolution
    assert [e.kind for e in events] == [EventKind.ANOMALY] and "regression" in events[0].detail


def test_rollover_counts_the_wrap_and_notes_the_modulus() -> None:
    v = Validator({("M-1", E): 100_000.0}, intervals={"M-1": 900})
    out, events = run(cumulative([99_999.0, 99_999.5, 0.25, 0.75]), v)
    assert flagged(out, Quality.ROLLOVER) == [2] and flagged(out, Quality.REGRESSION) == []
    assert out[2].note == "modulus=100000.0" and out[2].status is Status.VALID
    assert checks.consumption(np.array([0.25]), np.array([99_999.5]), np.array([100_000.0]))[0] == pytest.approx(0.75)
    assert events == []


def test_a_wrap_far_from_the_modulus_is_a_regression() -> None:
    v = Validator({("M-1", E): 100_000.0}, intervals={"M-1": 900})
    out, _ = run(cumulative([60_000.0, 20_000.0]), v)  # dropped 40,000 < modulus / 2
    assert flagged(out, Quality.REGRESSION) == [1] and flagged(out, Quality.ROLLOVER) == []


def test_going_backwards_across_zero_is_a_regression_not_a_huge_consumption() -> None:
    v = Validator({("M-1", E): 100_000.0}, intervals={"M-1": 900})
    out, _ = run(cumulative([5.0, 99_990.0, 6.0]), v)  # just wrapped, then read 15 units low
    assert flagged(out, Quality.REGRESSION) == [1]
    assert flagged(out, Quality.SPIKE) == [] and flagged(out, Quality.ROLLOVER) == []


def test_no_modulus_means_any_drop_is_a_regression() -> None:
    out, _ = run(cumulative([99_999.0, 1.0]))
    assert flagged(out, Quality.REGRESSION) == [1]


# -- spike --------------------------------------------------------------------------------

def test_spike_fires_on_a_burst_far_above_the_meters_own_intervals() -> None:
    values = household(3)
    values[250:] = [x + 8.0 for x in values[250:]]  # 8 kWh more in one interval, then normal again
    out, events = run(cumulative(values))
    assert flagged(out, Quality.SPIKE) == [250]
    assert out[250].status is Status.SUSPECT
    assert any("spike" in e.detail for e in events)


def test_the_evening_peak_is_not_a_spike() -> None:
    out, _ = run(cumulative(household(4, seed=3)))
    assert flagged(out, Quality.SPIKE) == []


def test_no_spike_is_judged_without_a_days_history() -> None:
    values = household(0.9)
    values[60:] = [x + 8.0 for x in values[60:]]
    out, _ = run(cumulative(values))
    assert flagged(out, Quality.SPIKE) == []


def test_a_read_after_a_gap_is_judged_on_its_rate_not_its_delta() -> None:
    values = household(3)
    readings = cumulative(values)
    del readings[250:262]  # three hours missing: the next delta is large, its rate is not
    out, _ = run(readings)
    assert flagged(out, Quality.SPIKE) == [] and flagged(out, Quality.GAP) == [250]


def test_spike_uses_robust_statistics() -> None:
    # Median and MAD ignore a few wild values that a mean and standard deviation would follow.
    window = np.array([[1.0, 1.1, 0.9, 1.0, 50.0, 1.05, np.nan]])
    center, spread, third = checks.robust_stats(window, np.array([6]))
    assert center[0] == pytest.approx(1.025) and spread[0] == pytest.approx(1.4826 * 0.05)
    assert third[0] == pytest.approx(1.05)


def test_water_bursts_are_not_spikes_but_a_leak_is() -> None:
    rng = np.random.default_rng(5)
    use = np.zeros(96 * 9)
    for day in range(9):
        for h in [*rng.uniform(6, 9, 2), *rng.uniform(17, 22, 3)]:
            use[int(day * 96 + h * 4)] += rng.uniform(0.01, 0.06)
    use[96 * 8 + 40] += 0.5  # 500 L in a quarter of an hour
    values = list(100 + np.cumsum(use))
    v = Validator(intervals={"W-1": 900}, utilities={"W-1": Utility.WATER})
    out, _ = run(cumulative(values, meter="W-1", channel=Channel.VOLUME), v)
    assert flagged(out, Quality.SPIKE) == [96 * 8 + 40]


# -- flatline and zero consumption ---------------------------------------------------------

def test_flatline_and_zero_consumption_after_24_hours_still() -> None:
    values = household(2)
    stuck = values[:150] + [values[149]] * 110 + [v + 0.0 for v in values[150:]]
    out, events = run(cumulative(stuck))
    # Read 149 set the value; 96 intervals later (24 h) zero consumption, after that flatline too.
    assert flagged(out, Quality.ZERO_CONSUMPTION)[0] == 149 + 96
    assert flagged(out, Quality.FLATLINE)[0] == 149 + 97
    assert flagged(out, Quality.FLATLINE)[-1] == 149 + 110
    kinds = [e.detail.split(":")[1].strip() for e in events]
    assert kinds.count("flatline") == 1 and kinds.count("zero_consumption") == 1  # once per episode


def test_a_register_that_never_moved_is_not_flat_and_export_has_no_zero_check() -> None:
    export = cumulative([0.0] * 200, channel=Channel.ENERGY_EXPORT)
    out, _ = run(export)
    assert flagged(out, Quality.FLATLINE) == [] and flagged(out, Quality.ZERO_CONSUMPTION) == []


def test_flatline_follows_the_meters_usual_runs() -> None:
    # A holiday home: still for 34 h in every three days. Once two such runs are on record
    # (the usual run is the second-longest of the last 16), runs that long are its normal.
    values, x = [], 100.0
    for _ in range(4):
        for i in range(288):
            if not 40 <= i < 176:
                x += 0.1
            values.append(x)
    table = ThresholdTable(fleet={"zero_consumption_hours": 1000.0})
    out, _ = run(cumulative(values), Validator(intervals={"M-1": 900}, thresholds=table))
    blocks = {i // 288 for i in flagged(out, Quality.FLATLINE)}
    assert blocks == {0, 1}


def test_water_zero_consumption_waits_72_hours() -> None:
    values = [100.0 + 0.01 * i for i in range(100)] + [101.0] * 300
    v = Validator(intervals={"W-1": 900}, utilities={"W-1": Utility.WATER})
    out, _ = run(cumulative(values, meter="W-1", channel=Channel.VOLUME), v)
    # Read 100 set the value; zero consumption once 72 h passed, flatline after 24 h.
    assert flagged(out, Quality.ZERO_CONSUMPTION)[0] == 100 + 72 * 4
    assert flagged(out, Quality.FLATLINE)[0] == 100 + 24 * 4 + 1


# -- gaps ------------------------------------------------------------------------------------

def test_gap_flags_the_first_read_after_missing_intervals() -> None:
    readings = cumulative([float(i) for i in range(10)])
    del readings[4:7]
    out, _ = run(readings)
    assert flagged(out, Quality.GAP) == [4]
    assert status_for(out[-1].quality) is Status.VALID


def test_no_gap_for_a_late_poll_or_an_unknown_interval() -> None:
    late = cumulative([1.0, 2.0, 3.0])
    late[2] = Reading("M-1", E, T0 + 2 * STEP + timedelta(minutes=7), 3.0, Kind.CUMULATIVE)
    out, _ = run(late)
    assert flagged(out, Quality.GAP) == []
    out, _ = run(cumulative([1.0, 2.0, 3.0], meter="X-9")[::2], Validator())
    assert flagged(out, Quality.GAP) == []


# -- clock -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("lag", "expected"), [
    (3.0, []),
    (45.0, []),  # delivered late but within the tolerance
    (3 * 3600.0, []),  # a broker held it through an outage: not the device's clock
    (-30.0, []),
    (-90.0, ["clock_skew"]),
    (-600.0, ["future_ts"]),
    (8 * 86400.0, ["stale_ts"]),
])
def test_clock_checks_compare_device_time_with_receipt(lag: float, expected: list[str]) -> None:
    out, _ = run(cumulative([1.0], lag=lag))
    assert out[0].quality.names() == expected


def test_a_reading_without_receive_time_has_no_clock_check() -> None:
    out, _ = run([Reading("M-1", E, T0 - timedelta(days=400), 1.0, Kind.CUMULATIVE)])
    assert out[0].quality == Quality.NONE


# -- out of range --------------------------------------------------------------------------------

@pytest.mark.parametrize(("channel", "value", "bad"), [
    (V, 230.0, False), (V, 190.0, False), (V, 183.0, True), (V, 277.0, True), (V, 0.0, True),
    (Channel.FREQUENCY, 50.02, False), (Channel.FREQUENCY, 44.0, True), (Channel.FREQUENCY, 66.0, True),
    (Channel.POWER_FACTOR, -0.9, False), (Channel.POWER_FACTOR, 1.01, True),
    (Channel.CURRENT_L1, -0.1, True), (Channel.POWER, -1.0, True), (Channel.POWER, 3.0, False),
    (Channel.ENERGY_IMPORT, -1.0, True), (Channel.ENERGY_IMPORT, math.nan, True),
    (Channel.POWER, math.inf, True), (Channel.FLOW, -0.5, True),
])
def test_out_of_range_is_rejected(channel: Channel, value: float, bad: bool) -> None:
    kind = Kind.CUMULATIVE if channel is Channel.ENERGY_IMPORT else Kind.INSTANTANEOUS
    out, _ = run([Reading("M-1", channel, T0, value, kind)])
    assert bool(out[0].quality & Quality.OUT_OF_RANGE) is bad
    assert (out[0].status is Status.REJECTED) is bad


def test_bidirectional_meters_may_read_negative_power() -> None:
    out, _ = run([Reading("M-1", Channel.POWER, T0, -2.5, Kind.INSTANTANEOUS)], Validator(bidirectional={"M-1"}))
    assert out[0].quality == Quality.NONE


def test_a_rejected_read_is_not_the_next_reference() -> None:
    out, _ = run(cumulative([10.0, math.nan, -5.0, 11.0]))
    assert flagged(out, Quality.OUT_OF_RANGE) == [1, 2] and flagged(out, Quality.REGRESSION) == []


def test_nominal_voltage_is_configurable_per_utility_and_channel() -> None:
    table = ThresholdTable(utility_channels={(Utility.ELECTRICITY, V): {"nominal_voltage": 120.0}})
    out, _ = run([Reading("M-1", V, T0, 120.0, Kind.INSTANTANEOUS), Reading("M-1", V, T0 + STEP, 230.0,
                                                                            Kind.INSTANTANEOUS)],
                 Validator(thresholds=table))
    assert flagged(out, Quality.OUT_OF_RANGE) == [1]


# -- duplicates ------------------------------------------------------------------------------------

def test_same_key_other_value_conflicts_identical_repeat_is_a_no_op() -> None:
    a, b = cumulative([10.0, 11.0])
    v = Validator(intervals={"M-1": 900})
    out, _ = v.validate([a, a, Reading("M-1", E, a.ts, 10.5, Kind.CUMULATIVE)])
    assert [(r.value, r.quality.names()) for r in out] == [(10.0, []), (10.5, ["duplicate_conflict"])]
    out, _ = v.validate([Reading("M-1", E, a.ts, 9.0, Kind.CUMULATIVE), b])  # again, one batch later
    assert [(r.value, r.quality.names()) for r in out] == [(9.0, ["duplicate_conflict"]), (11.0, [])]
    out, _ = v.validate([b])  # re-delivered as it was: nothing new
    assert out[0].quality == Quality.NONE


# -- tamper and inspections -------------------------------------------------------------------

def test_device_tamper_is_suspect_and_recommends_an_inspection_once() -> None:
    readings = cumulative([1.0, 2.0, 3.0, 4.0])
    readings[1:3] = [Reading("M-1", E, r.ts, r.value, r.kind, quality=Quality.TAMPER) for r in readings[1:3]]
    out, events = run(readings)
    assert [r.status for r in out] == [Status.VALID, Status.SUSPECT, Status.SUSPECT, Status.VALID]
    assert [e.kind for e in events] == [EventKind.INSPECTION_RECOMMENDED]


def test_three_regressions_in_30_days_recommend_an_inspection() -> None:
    values = [float(i) for i in range(40)]
    for i in (5, 15, 25):
        values[i] -= 5.0
    out, events = run(cumulative(values))
    assert flagged(out, Quality.REGRESSION) == [5, 15, 25]
    inspections = [e for e in events if e.kind is EventKind.INSPECTION_RECOMMENDED]
    assert len(inspections) == 1 and inspections[0].ts == out[25].ts and "3 regressions" in inspections[0].detail


def test_regressions_spread_over_more_than_the_window_do_not() -> None:
    table = ThresholdTable(fleet={"inspection_days": 0.1})  # 2.4 hours
    values = [float(i) for i in range(40)]
    for i in (5, 15, 25):
        values[i] -= 5.0
    _, events = run(cumulative(values), Validator(intervals={"M-1": 900}, thresholds=table))
    assert not [e for e in events if e.kind is EventKind.INSPECTION_RECOMMENDED]


# -- the status rule ---------------------------------------------------------------------------

@pytest.mark.parametrize(("quality", "status"), [
    (Quality.NONE, Status.VALID), (Quality.ROLLOVER, Status.VALID), (Quality.GAP, Status.VALID),
    (Quality.CLOCK_SKEW, Status.VALID), (Quality.ZERO_CONSUMPTION, Status.VALID),
    (Quality.REGRESSION, Status.SUSPECT), (Quality.SPIKE, Status.SUSPECT), (Quality.FLATLINE, Status.SUSPECT),
    (Quality.TAMPER, Status.SUSPECT), (Quality.DUPLICATE_CONFLICT, Status.SUSPECT),
    (Quality.FUTURE_TS, Status.SUSPECT), (Quality.STALE_TS, Status.SUSPECT), (Quality.ESTIMATED, Status.ESTIMATED),
    (Quality.OUT_OF_RANGE, Status.REJECTED), (Quality.OUT_OF_RANGE | Quality.SPIKE, Status.REJECTED),
    (Quality.SPIKE | Quality.GAP, Status.SUSPECT),
])
def test_status_rule(quality: Quality, status: Status) -> None:
    assert status_for(quality) is status


def test_timestamps_leave_in_utc() -> None:
    from datetime import timezone

    local = datetime(2026, 3, 2, 3, 0, tzinfo=timezone(timedelta(hours=3)))
    out, _ = Validator().validate([Reading("M-1", E, local, 1.0, Kind.CUMULATIVE)])
    assert out[0].ts == local and out[0].ts.tzinfo is UTC
