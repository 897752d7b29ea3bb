"""Issue 24 items 1-3: sum check (interval vs register), TOU sum check, usage while disconnected.
The numpy maths alone, and through Validator + CrossChecks as the pipeline runs them (no servers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from api.cim.tables import load_tables
from gateway.model import BalanceUpdate, Channel, EventKind, Kind, Quality, Reading, Relay, Severity, Status
from gateway.model.frame import to_us
from gateway.validate import sums
from gateway.validate.cross import CrossChecks
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator

T0 = datetime(2026, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=15)
US15 = 15 * 60 * 1_000_000
E, T1, T2 = Channel.ENERGY_IMPORT, Channel.ENERGY_IMPORT_T1, Channel.ENERGY_IMPORT_T2


def a(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def i(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# -- the maths -----------------------------------------------------------------------------------

def test_tolerance_is_one_percent_or_two_resolutions_whichever_is_larger() -> None:
    advance = a(10.0, 10.0, 0.05, 0.05)
    parts = a(10.1, 10.11, 0.052, 0.0525)
    # 1 % of 10 = 0.1 passes, 0.11 fails; on a small advance 2 x 0.001 = 0.002 rules.
    assert sums.mismatch(advance, parts, 0.001, 0.01, 2.0).tolist() == [False, True, False, True]
    assert not sums.mismatch(a(np.nan), a(1.0), 0.001, 0.01, 2.0).any()  # no reference: not judged


def test_window_sums_take_the_intervals_ending_inside_each_window() -> None:
    # Meter 0: four 15-min intervals of 0.25; meter 1: two of 1.0. Intervals come unsorted.
    ig = i(0, 1, 0, 0, 1, 0)
    ie = i(US15 * 2, US15, US15, US15 * 4, US15 * 2, US15 * 3)
    iv = a(0.25, 1.0, 0.25, 0.25, 1.0, 0.25)
    wg, ws, we = i(0, 0, 1), i(0, US15 * 2, 0), i(US15 * 2, US15 * 4, US15 * 2)
    got = sums.window_sums(ig, ie, iv, wg, ws, we)
    assert got.total.tolist() == [0.5, 0.5, 2.0]  # an interval ending at a window's start is the window before's
    assert got.count.tolist() == [2, 2, 2]


def test_interval_sum_check_flags_a_window_whose_intervals_do_not_add_up_and_skips_gaps() -> None:
    # Three windows of one hour; the register advanced 1.0 in each.
    wg, ws, we = i(0, 0, 0), i(0, 4 * US15, 8 * US15), i(4 * US15, 8 * US15, 12 * US15)
    ends = np.arange(1, 13, dtype=np.int64) * US15
    values = np.full(12, 0.25)
    values[5] = 0.10  # window 2 sums to 0.85: the load profile lost 0.15 kWh
    keep = np.ones(12, bool)
    keep[10] = False  # window 3 misses an interval: a gap, not a sum failure
    got = sums.window_sums(np.zeros(keep.sum(), np.int64), ends[keep], values[keep], wg, ws, we)
    result = sums.interval_sum_check(wg, ws, we, a(10, 11, 12), a(11, 12, 13), i(US15, US15, US15), got,
                                     0.001, 0.01, 2.0)
    assert result.judged.tolist() == [True, True, False]
    assert result.failed.tolist() == [False, True, False]
    assert result.intervals[1] == pytest.approx(0.85) and result.advance[1] == 1.0


def test_load_profile_cumulative_becomes_interval_deltas_per_meter() -> None:
    got = sums.deltas_of_cumulative(i(0, 0, 0, 1, 1), a(10.0, 10.5, 11.0, 3.0, 3.25))
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert got[[1, 2, 4]].tolist() == [0.5, 0.5, 0.25]


# -- TOU sum check through the validator ---------------------------------------------------------

def tou_reads(totals: Sequence[float], t1: Sequence[float], t2: Sequence[float], meter: str = "M-1") -> list[Reading]:
    out = []
    for k, (tot, a1, a2) in enumerate(zip(totals, t1, t2, strict=True)):
        ts = T0 + k * STEP
        out += [Reading(meter, ch, ts, v, Kind.CUMULATIVE, received_at=ts) for ch, v in ((E, tot), (T1, a1), (T2, a2))]
    return out


def checked(readings: Sequence[Reading], validator: Validator, cross: CrossChecks,
            one_by_one: bool = True) -> tuple[list[Reading], list]:  # type: ignore[type-arg]
    """Each timestamp as its own batch (as polls arrive), or all at once."""
    out: list[Reading] = []
    events: list = []  # type: ignore[type-arg]
    by_ts: dict[datetime, list[Reading]] = {}
    for r in readings:
        by_ts.setdefault(r.ts if one_by_one else T0, []).append(r)
    for batch in by_ts.values():
        got, found = validator.validate(batch)
        got, crossed = cross.check(got)
        out += got
        events += found + crossed
    return out, events


def test_tou_registers_that_add_up_pass_and_a_lagging_tariff_is_flagged_once_per_episode() -> None:
    totals = [100.0, 100.5, 101.0, 101.5, 102.0, 102.5]
    t1 = [60.0, 60.5, 61.0, 61.0, 61.0, 61.5]  # from read 3 on, tariff 1 stops counting ...
    t2 = [40.0, 40.0, 40.0, 40.0, 40.0, 40.0]  # ... and tariff 2 does not take over
    for one_by_one in (True, False):
        validator = Validator()
        readings, events = checked(tou_reads(totals, t1, t2), validator, CrossChecks(validator), one_by_one)
        flagged = sorted({(r.ts, r.channel) for r in readings if r.quality & Quality.TOU_SUM_CHECK})
        assert flagged == sorted((T0 + k * STEP, ch) for k in (3, 4) for ch in (E, T1, T2)), one_by_one
        assert all(r.status is Status.SUSPECT for r in readings if r.quality & Quality.TOU_SUM_CHECK)
        anomalies = [e for e in events if e.kind is EventKind.ANOMALY and "tou_sum_check" in e.detail]
        assert len(anomalies) == 1, anomalies
        assert "advanced 0," in anomalies[0].detail or "advanced 0 " in anomalies[0].detail
        assert "the total 0.5" in anomalies[0].detail


def test_tou_sum_within_two_resolutions_passes() -> None:
    validator = Validator()
    readings, events = checked(tou_reads([100.0, 100.501], [60.0, 60.5], [40.0, 40.0]), validator,
                               CrossChecks(validator))
    assert not any(r.quality & Quality.TOU_SUM_CHECK for r in readings)
    assert not events


def test_tou_tolerance_is_configurable() -> None:
    validator = Validator(thresholds=ThresholdTable(fleet={"sum_resolutions": 0.5, "sum_tolerance": 0.0}))
    readings, _ = checked(tou_reads([100.0, 100.501], [60.0, 60.5], [40.0, 40.0]), validator, CrossChecks(validator))
    assert any(r.quality & Quality.TOU_SUM_CHECK for r in readings)


# -- usage while disconnected --------------------------------------------------------------------

def energy(values: Sequence[float], meter: str = "P-1", start: int = 0, quality: Quality = Quality.NONE
           ) -> list[Reading]:
    return [Reading(meter, E, T0 + (start + k) * STEP, v, Kind.CUMULATIVE, quality=quality,
                    received_at=T0 + (start + k) * STEP) for k, v in enumerate(values)]


def balance(meter: str, at: int, relay: Relay) -> BalanceUpdate:
    return BalanceUpdate(meter, T0 + at * STEP - timedelta(seconds=1), Decimal("0"), "KES", relay=relay)


def test_consumption_while_the_payg_relay_is_open_is_flagged_with_one_tamper_event_per_episode() -> None:
    validator = Validator()
    cross = CrossChecks(validator)
    out: list[Reading] = []
    events: list = []  # type: ignore[type-arg]

    def feed(readings: list[Reading], updates: Sequence[BalanceUpdate] = ()) -> None:
        cross.relay(updates)
        got, found = validator.validate(readings)
        got, crossed = cross.check(got)
        out.extend(got)
        events.extend(found + crossed)

    feed(energy([10.0, 10.2]))
    # The relay opens; the first read after it still counts what was measured before (0.001 in flight).
    feed(energy([10.201], start=2), [balance("P-1", 2, Relay.DISCONNECTED)])
    feed(energy([10.202, 10.5, 10.9], start=3))  # one step more is in flight; then a bypass
    feed(energy([11.0], start=6), [balance("P-1", 6, Relay.CONNECTED)])  # reconnected: consumption is fine
    feed(energy([11.0], start=7), [balance("P-1", 7, Relay.DISCONNECTED)])
    feed(energy([11.3], start=8))  # a second episode
    flagged = [r.value for r in out if r.quality & Quality.USAGE_WHILE_DISCONNECTED]
    assert flagged == [10.5, 10.9, 11.3]
    assert all(r.status is Status.SUSPECT for r in out if r.quality & Quality.USAGE_WHILE_DISCONNECTED)
    tampers = [e for e in events if e.kind is EventKind.TAMPER]
    assert [(e.ts, e.severity) for e in tampers] == [(T0 + 4 * STEP, Severity.CRITICAL), (T0 + 8 * STEP, Severity.CRITICAL)]
    assert "balance reports the relay disconnected" in tampers[0].detail and "10.5" in tampers[0].detail


def test_a_meter_reporting_its_relay_open_in_its_status_word_is_judged_by_that() -> None:
    validator = Validator()
    cross = CrossChecks(validator)
    reads = energy([5.0, 5.0, 5.0], quality=Quality.RELAY_OPEN) + energy([5.4], start=3, quality=Quality.RELAY_OPEN) \
        + energy([5.6], start=4)
    got, events = checked(reads, validator, cross, one_by_one=False)
    assert [r.value for r in got if r.quality & Quality.USAGE_WHILE_DISCONNECTED] == [5.4]
    assert [e.kind for e in events if e.kind is EventKind.TAMPER] == [EventKind.TAMPER]
    assert [r.status for r in got if not r.quality & Quality.USAGE_WHILE_DISCONNECTED] == [Status.VALID] * 4


def test_consumption_on_an_inactive_meter_is_usage_while_disconnected() -> None:
    validator = Validator()
    cross = CrossChecks(validator, inactive={"P-9"})
    got, events = checked(energy([1.0, 1.0, 1.5], meter="P-9") + energy([1.0, 1.5], meter="P-2"), validator, cross)
    assert [(r.meter_id, r.value) for r in got if r.quality & Quality.USAGE_WHILE_DISCONNECTED] == [("P-9", 1.5)]
    assert len([e for e in events if e.kind is EventKind.TAMPER]) == 1
    assert "inactive" in next(e for e in events if e.kind is EventKind.TAMPER).detail


def test_timestamps_before_the_relay_opened_are_not_judged() -> None:
    validator = Validator()
    cross = CrossChecks(validator)
    cross.relay([balance("P-1", 5, Relay.DISCONNECTED)])
    got, _ = checked(energy([1.0, 2.0, 3.0]), validator, cross)
    assert not any(r.quality & Quality.USAGE_WHILE_DISCONNECTED for r in got)
    assert to_us(got[0].ts) < to_us(T0 + 5 * STEP)


def test_the_new_flags_have_their_iec_61968_9_reading_quality_codes() -> None:
    tables = load_tables()
    suspect = Quality.USAGE_WHILE_DISCONNECTED | Quality.RELAY_OPEN
    assert tables.qualities(Status.SUSPECT, int(suspect)) == ["3.5.258", "3.6.2", "1.2.3"]
    assert tables.qualities(Status.SUSPECT, int(Quality.TOU_SUM_CHECK)) == ["3.5.258", "3.6.9"]
    assert tables.qualities(Status.SUSPECT, int(Quality.SUM_CHECK)) == ["3.5.258", "3.6.0"]


def test_a_closed_read_between_two_open_ones_in_one_batch_starts_a_new_baseline() -> None:
    validator = Validator()
    cross = CrossChecks(validator)
    reads = energy([5.0], quality=Quality.RELAY_OPEN) + energy([6.0], start=1) \
        + energy([6.0, 6.001], start=2, quality=Quality.RELAY_OPEN)
    got, events = checked(reads, validator, cross, one_by_one=False)
    assert not any(r.quality & Quality.USAGE_WHILE_DISCONNECTED for r in got)
    assert not events
