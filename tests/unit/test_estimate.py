"""Estimation: gaps of interval data filled linearly (short) or from the meter's own like days
(long); estimates are marked, never made without real reads at both ends, and replaced in
the store when the real read arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.model import Batch, Channel, Kind, Quality, Reading, Source, Status
from gateway.validate.estimate import boundaries, estimate_gap
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator
from storage.open import open_store
from tests.unit.test_checks import STEP, T0, E, cumulative, household, run

US = 1_000_000
I15 = 900 * US


def estimates(out: list[Reading]) -> list[Reading]:
    return [r for r in out if r.source is Source.ESTIMATE]


def test_boundaries_are_the_missing_intervals_only() -> None:
    assert boundaries(0, 4 * I15, I15).tolist() == [I15, 2 * I15, 3 * I15]
    assert boundaries(0, I15 + 7 * 60 * US, I15).tolist() == []  # one late read is not a gap
    assert boundaries(0, 2 * I15 + 7 * 60 * US, I15).tolist() == [I15]  # 7 min late: its own read
    assert boundaries(0, 2 * I15 + 8 * 60 * US, I15).tolist() == [I15, 2 * I15]  # over half an interval


def test_linear_fill_between_the_real_reads() -> None:
    est = estimate_gap(0, 10.0, 4 * I15, 14.0, interval_us=I15, modulus=np.nan, linear_us=2 * 3600 * US,
                       profile=None)
    assert est.method == "linear" and est.values.tolist() == [11.0, 12.0, 13.0]


def test_a_short_gap_in_the_stream_is_filled_linearly_and_marked() -> None:
    readings = cumulative([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    del readings[2:4]
    out, _ = run(readings)
    est = estimates(out)
    assert [(r.ts, r.value) for r in est] == [(T0 + 2 * STEP, 12.0), (T0 + 3 * STEP, 13.0)]
    assert all(r.status is Status.ESTIMATED and r.quality == Quality.ESTIMATED and r.kind is Kind.CUMULATIVE
               and r.note == "estimate=linear from=2026-03-02T00:15:00Z,2026-03-02T01:00:00Z linear_hours=3" for r in est)
    assert [r.ts for r in out if r.source is not Source.ESTIMATE][2] == T0 + 4 * STEP  # the real read stays


def test_a_long_gap_follows_the_meters_own_profile_scaled_to_the_real_reads() -> None:
    values = household(9, seed=4)
    readings = cumulative(values)
    # Evening of day 8: 17:00 to 23:00 missing (6 h), across the evening peak.
    lo, hi = 8 * 96 + 68, 8 * 96 + 92
    del readings[lo + 1:hi]
    out, _ = run(readings)
    est = estimates(out)
    assert len(est) == hi - lo - 1 and {(r.note or "").split()[0] for r in est} == {"estimate=like_day"}
    got = np.array([r.value for r in est])
    true = np.array(values[lo + 1:hi])
    assert got[0] > values[lo] and np.all(np.diff(got) >= 0) and got[-1] < values[hi]
    linear = values[lo] + (values[hi] - values[lo]) * (np.arange(1, hi - lo) / (hi - lo))
    # The profile knows the evening peak; a straight line does not.
    assert np.abs(got - true).mean() < 0.5 * np.abs(linear - true).mean()


def test_estimates_wrap_with_the_register() -> None:
    est = estimate_gap(0, 99_998.0, 4 * I15, 2.0, interval_us=I15, modulus=100_000.0, linear_us=10 * 3600 * US,
                       profile=None)
    assert est.values.tolist() == pytest.approx([99_999.0, 0.0, 1.0])


@pytest.mark.parametrize("why", ["regression_after", "regression_before", "spike_after", "too_long", "fast_meter",
                                 "switched_off"])
def test_no_estimates_without_good_real_reads_or_for_gaps_not_worth_it(why: str) -> None:
    values = household(2)
    readings = cumulative(values)
    validator = Validator(intervals={"M-1": 900})
    if why == "regression_after":
        readings[150] = Reading("M-1", E, readings[150].ts, values[100], Kind.CUMULATIVE)
    elif why == "regression_before":
        readings[145] = Reading("M-1", E, readings[145].ts, values[100], Kind.CUMULATIVE)
    elif why == "spike_after":
        readings[150:] = [Reading("M-1", E, r.ts, r.value + 50, Kind.CUMULATIVE) for r in readings[150:]]
    elif why == "too_long":
        validator = Validator(intervals={"M-1": 900}, thresholds=ThresholdTable(fleet={"estimate_max_hours": 1.0}))
    elif why == "fast_meter":
        validator = Validator(intervals={"M-1": 900}, estimate_min_interval=3600)
    else:
        validator = Validator(intervals={"M-1": 900}, estimate=False)
    del readings[146:150]
    out, _ = run(readings, validator)
    assert estimates(out) == []
    assert any(r.quality & Quality.GAP for r in out)


def test_estimates_are_not_history() -> None:
    # The read after a filled gap is compared with the real read before it, not an estimate.
    readings = cumulative([10.0, 11.0, 12.0, 13.0, 12.5])
    del readings[1:3]
    out, _ = run(readings)
    assert [r.quality.names() for r in out if r.source is not Source.ESTIMATE] == [[], ["gap"], ["regression"]]


async def test_the_real_read_replaces_the_estimate_in_the_store_and_the_feed(tmp_path: Path) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "store.db")
    try:
        await store.migrate()
        validator = Validator(intervals={"M-1": 900})
        readings = cumulative([10.0, 11.0, 12.0, 13.0])
        late = readings.pop(1)
        out, _ = validator.validate(readings[:1])
        await store.write(Batch(readings=out))
        out, _ = validator.validate(readings[1:])
        assert [r.source for r in out] == [Source.ESTIMATE, Source.MODBUS, Source.MODBUS]
        await store.write(Batch(readings=out))
        page = await store.feed(after=0)
        cursor = page.next_after
        estimated = [r for r in page.items if r.ts == late.ts]
        assert [(r.value, r.status) for r in estimated] == [(11.0, Status.ESTIMATED)]

        # The real read arrives after all (e.g. a meter's buffered interval data).
        out, _ = validator.validate([Reading("M-1", E, late.ts, 11.2, Kind.CUMULATIVE, received_at=late.received_at)])
        assert [(r.value, r.status, r.quality) for r in out] == [(11.2, Status.VALID, Quality.NONE)]
        await store.write(Batch(readings=out))
        page = await store.feed(after=cursor)
        assert [(r.ts, r.value, r.source, r.status) for r in page.items] == [
            (late.ts, 11.2, Source.MODBUS, Status.VALID)]

        # An estimate arriving for a key that has a real read changes nothing.
        again = Reading("M-1", E, late.ts, 11.0, Kind.CUMULATIVE, quality=Quality.ESTIMATED,
                        status=Status.ESTIMATED, source=Source.ESTIMATE)
        await store.write(Batch(readings=[again]))
        stored = await store.readings("M-1", start=late.ts, end=late.ts + timedelta(seconds=1), channel=E)
        assert [(r.value, r.source) for r in stored] == [(11.2, Source.MODBUS)]
    finally:
        await store.close()


def test_hour_of_week_starts_on_monday() -> None:
    from gateway.validate.checks import hour_of_week

    monday = datetime(2026, 3, 2, tzinfo=UTC)
    stamps = [int((monday + timedelta(hours=h)).timestamp()) * US for h in (0, 25, 167, 168)]
    assert hour_of_week(np.array(stamps)).tolist() == [0, 25, 167, 0]
    assert Channel.ENERGY_IMPORT is E
