"""Properties of VEE that must hold for any series (hypothesis), and the vectorised Validator held
to the per-reading ReferenceValidator (its executable specification) reading for reading."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Channel, Kind, Quality, Reading, Source
from gateway.normalise.frame import ReadingFrame
from gateway.validate.checks import consumption
from gateway.validate.reference import ReferenceValidator
from gateway.validate.validator import Validator
from simulators.dataset import generate
from tests.unit.test_checks import STEP, T0, E, cumulative

MODULUS = 100_000.0
increments = st.lists(st.floats(min_value=0.0, max_value=MODULUS / 3, allow_nan=False), min_size=1, max_size=60)


@given(st.floats(min_value=0.0, max_value=MODULUS - 0.001), increments)
def test_a_wrapping_register_that_only_grows_is_never_a_regression_and_its_consumption_adds_up(
        start: float, steps: list[float]) -> None:
    total, values = start, [start]
    for inc in steps:
        total += inc
        values.append(total % MODULUS)
    v = Validator({("M-1", E): MODULUS}, intervals={"M-1": 900})
    out, events = v.validate(cumulative(values))
    assert not any(r.quality & Quality.REGRESSION for r in out) and events == []
    wraps = sum(1 for r in out if r.quality & Quality.ROLLOVER)
    assert wraps == math.floor(total / MODULUS) - math.floor(start / MODULUS)
    import numpy as np

    got = consumption(np.array(values[1:]), np.array(values[:-1]), np.full(len(steps), MODULUS))
    assert float(got.sum()) == __import__("pytest").approx(total - start, rel=1e-9, abs=1e-6)


@given(increments, st.integers(min_value=1, max_value=59), st.floats(min_value=0.01, max_value=MODULUS / 3))
def test_a_drop_of_less_than_half_the_modulus_is_always_a_regression(steps: list[float], at: int, drop: float) -> None:
    total, values = 1000.0, [1000.0]
    for inc in steps:
        total += inc
        values.append(total)
    at = min(at, len(values) - 1)
    values[at] = values[at - 1] - drop
    v = Validator({("M-1", E): MODULUS}, intervals={"M-1": 900})
    out, _ = v.validate(cumulative([x % MODULUS for x in values]))
    assert out[at].quality & Quality.REGRESSION and not out[at].quality & Quality.ROLLOVER


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-5, max_value=10, allow_nan=False), min_size=2, max_size=40),
       st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=10))
def test_regression_and_rollover_do_not_depend_on_how_the_stream_is_cut_into_batches(
        deltas: list[float], cuts: list[int]) -> None:
    values, x = [], 50_000.0
    for d in deltas:
        x += d
        values.append(x % MODULUS)
    readings = cumulative(values)
    whole, _ = Validator({("M-1", E): MODULUS}).validate(readings)
    v, pieces, i = Validator({("M-1", E): MODULUS}), [], 0
    for n in itertools.cycle(cuts):  # cut the whole stream, however short `cuts` is
        if i >= len(readings):
            break
        out, _ = v.validate(readings[i:i + n])
        pieces += out
        i += n
    mask = Quality.REGRESSION | Quality.ROLLOVER
    assert [r.quality & mask for r in pieces] == [r.quality & mask for r in whole]


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=5, max_size=80))
def test_estimates_never_replace_a_read_and_stay_between_their_real_reads(steps: list[float]) -> None:
    values, x = [], 10.0
    for s in steps:
        x += s
        values.append(x)
    readings = cumulative(values)
    kept = readings[::3] + readings[-1:] if len(readings) % 3 != 1 else readings[::3]
    v = Validator(intervals={"M-1": 900})
    out = []
    for r in kept:
        out += v.validate([r])[0]
    real = {r.ts: r.value for r in out if r.source is not Source.ESTIMATE}
    assert real == {r.ts: r.value for r in kept}
    for r in out:
        if r.source is Source.ESTIMATE:
            assert r.ts not in {k.ts for k in kept}
            lo = max(t for t in real if t < r.ts)
            hi = min(t for t in real if t > r.ts)
            assert real[lo] - 1e-9 <= r.value <= real[hi] + 1e-9


def _same(a: list[Reading], b: list[Reading]) -> list[str]:
    def key(r: Reading) -> tuple[str, Channel, object, Source]:
        return (r.meter_id, r.channel, r.ts, r.source)

    ka = {key(r): (r.quality, r.status, r.note, r.value) for r in a}
    kb = {key(r): (r.quality, r.status, r.note, r.value) for r in b}
    diffs = [f"only in one: {k}" for k in set(ka) ^ set(kb)]
    for k in set(ka) & set(kb):
        x, y = ka[k], kb[k]
        same_value = x[3] == y[3] or (math.isnan(x[3]) and math.isnan(y[3]))
        if x[:3] != y[:3] or not same_value:
            diffs.append(f"{k}: validator {x} reference {y}")
    return diffs


def test_validator_matches_the_reference_reading_for_reading() -> None:
    ds = generate(electricity=16, water=6, days=8, seed=11)
    validator = Validator(ds.moduli, intervals=ds.intervals, utilities=ds.utilities, bidirectional=ds.bidirectional)
    reference = ReferenceValidator(validator.settings)
    diffs: list[str] = []
    rows = 0
    for batch in ds.batches:
        frame, _ = validator.validate_frame(ReadingFrame.from_readings(batch, validator.series))
        got = frame.to_readings(validator.series)
        rows += len(got)
        diffs += _same(got, reference.validate(batch))
    assert rows > 60_000 and not diffs, diffs[:10]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=-3, max_value=8, allow_nan=False), st.booleans(),
                          st.sampled_from([3.0, -90.0, -700.0, 8 * 86400.0])), min_size=60, max_size=250))
def test_validator_matches_the_reference_on_random_streams(rows: list[tuple[float, bool, float]]) -> None:
    validator = Validator({("M-1", E): 1000.0}, intervals={"M-1": 900}, window=16, stats_every=4,
                          thresholds=__import__("gateway.validate.thresholds", fromlist=["x"]).ThresholdTable(
                              fleet={"spike_min_samples": 8, "spike_min_days": 0.05, "flatline_min_hours": 1.0,
                                     "zero_consumption_hours": 2.0}))
    reference = ReferenceValidator(validator.settings, window=16, stats_every=4)
    x, diffs = 500.0, []
    for i, (delta, present, lag) in enumerate(rows):
        x = (x + delta) % 1000.0
        if not present:
            continue  # a missing poll: a gap
        ts = T0 + i * STEP
        batch = [Reading("M-1", E, ts, x, Kind.CUMULATIVE, received_at=ts + timedelta(seconds=lag))]
        got, _ = validator.validate(batch)
        diffs += _same(got, reference.validate(batch))
    assert not diffs, diffs[:5]
