"""The regression check of cumulative registers, with rollover at the modulus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Channel, EventKind, Kind, Quality, Reading, Status
from gateway.validate.validator import Validator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
E = Channel.ENERGY_IMPORT


def series(values: list[float], meter: str = "M-1", start: int = 0) -> list[Reading]:
    return [Reading(meter, E, T0 + timedelta(minutes=15 * (start + i)), v, Kind.CUMULATIVE) for i, v in enumerate(values)]


def flags(out: list[Reading]) -> list[list[str]]:
    return [r.quality.names() for r in out]


def test_regression_flagged_suspect_with_event() -> None:
    out, events = Validator().validate(series([10, 11, 9, 12]))
    assert flags(out) == [[], [], ["regression"], []]
    assert [r.status for r in out] == [Status.VALID, Status.VALID, Status.SUSPECT, Status.VALID]
    assert [e.kind for e in events] == [EventKind.ANOMALY]


def test_rollover_is_not_regression() -> None:
    v = Validator({("M-1", E): 100_000.0})
    out, events = v.validate(series([99_990, 99_999, 5]))
    assert flags(out) == [[], [], ["rollover"]]
    assert out[2].status is Status.VALID
    assert events == []


def test_small_drop_with_modulus_is_still_regression() -> None:
    v = Validator({("M-1", E): 100_000.0})
    out, _ = v.validate(series([50_000, 49_000]))
    assert flags(out) == [[], ["regression"]]


def test_history_spans_batches_and_seed() -> None:
    v = Validator()
    v.seed([("M-1", E, T0 - timedelta(hours=1), 500.0)])
    out, _ = v.validate(series([499.0]))
    assert flags(out) == [["regression"]]
    out, _ = v.validate(series([501.0], start=1))
    assert flags(out) == [[]]


def test_regressed_value_is_not_the_next_reference() -> None:
    out, _ = Validator().validate(series([100, 50, 60, 101]))
    # 60 is still below the last good value 100; 101 is fine.
    assert flags(out) == [[], ["regression"], ["regression"], []]


def test_series_are_independent_and_order_restored_by_ts() -> None:
    readings = series([5, 6], meter="B") + list(reversed(series([10, 11], meter="A")))
    out, _ = Validator().validate(readings)
    assert [(r.meter_id, r.value) for r in out] == [("A", 10), ("A", 11), ("B", 5), ("B", 6)]
    assert all(r.quality == Quality.NONE for r in out)


def test_instantaneous_values_never_regress() -> None:
    rs = [Reading("M-1", Channel.POWER, T0 + timedelta(minutes=i), v, Kind.INSTANTANEOUS) for i, v in enumerate([5, 1])]
    out, _ = Validator().validate(rs)
    assert flags(out) == [[], []]


def test_out_of_range_rejected() -> None:
    rs = [Reading("M-1", Channel.FREQUENCY, T0, 99.0, Kind.INSTANTANEOUS)]
    out, _ = Validator().validate(rs)
    assert out[0].status is Status.REJECTED and flags(out) == [["out_of_range"]]


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_monotonic_series_never_flagged(increments: list[float]) -> None:
    values, total = [], 0.0
    for inc in increments:
        total += inc
        values.append(total)
    out, events = Validator().validate(series(values))
    assert all(r.quality == Quality.NONE for r in out) and events == []


@given(st.floats(min_value=0, max_value=99_999), st.floats(min_value=0.001, max_value=40_000))
def test_wrap_across_modulus_is_rollover(start: float, step: float) -> None:
    modulus = 100_000.0
    after = (start + step) % modulus
    out, _ = Validator({("M-1", E): modulus}).validate(series([start, after]))
    expected = ["rollover"] if start + step >= modulus else []
    assert out[1].quality.names() == expected
