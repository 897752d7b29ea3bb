"""The float32 exact path in a dozen numpy calls (`_exact_f32`, issue 16's throughput item) gives the
same float64 bits as the path that decides exactly (`_digits`, then the total of decimals), for any
float32 bit pattern and any exact scale x factor, and never takes a value that path would refuse;
a frame of several polls still equals each value decoded alone."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.model.shown import (
    _EXACT_POWER,
    _POW10,
    _digits,
    _exact_f32,
    arithmetic_decimals,
    exact_of,
    rounding_of,
    shown_columns,
    shown_value,
)

SCALES = [1.0, 0.1, 0.01, 0.001, 10.0, 100.0, -1.0, -0.01, 0.0, 0.5, 0.25, 1e-05, 1e-09, 1000.0]
FACTORS = [1.0, 0.001, 1000.0, 0.01, 3.6, 1e-06]

bits32 = st.integers(min_value=0, max_value=2**32 - 1)
near_usual = st.builds(lambda x, d: (struct.unpack("<I", struct.pack("<f", x))[0] + d) % 2**32,
                       st.floats(-1e8, 1e8, width=32), st.integers(-2, 2))


def _decided(x32: np.ndarray, ints: np.ndarray, places: np.ndarray) -> np.ndarray | None:
    """The exact path as it decides (kept as it was before the fast path)."""
    found = _digits(x32)
    if found is None:
        return None
    digits, own, _ = found
    total = own + places
    return (digits * ints) / _POW10[total] if int(total.max()) <= _EXACT_POWER else None


@given(st.integers(1, 4), st.lists(st.tuples(st.sampled_from(SCALES), st.sampled_from(FACTORS)), min_size=1, max_size=11),
       st.data())
def test_the_fast_exact_path_gives_the_same_bits_or_leaves_it_to_the_exact_decision(
        polls: int, columns: list[tuple[float, float]], data: st.DataObject) -> None:
    exact = exact_of([s for s, _ in columns], [0.0] * len(columns), [f for _, f in columns])
    if exact is None:
        return
    words = data.draw(st.lists(st.one_of(bits32, near_usual), min_size=polls * len(columns),
                               max_size=polls * len(columns)))
    x32 = np.asarray(words, dtype=np.uint32).view(np.float32).reshape(polls, len(columns))
    with np.errstate(invalid="ignore", over="ignore"):
        fast = _exact_f32(x32, exact)
        decided = _decided(x32, exact.ints, exact.places)
    if fast is not None:
        assert decided is not None, x32
        assert fast.view(np.uint64).tolist() == decided.view(np.uint64).tolist(), (x32, fast, decided)


@given(st.lists(st.floats(-1e7, 1e7, width=32), min_size=3, max_size=3 * 7).filter(lambda v: len(v) % 3 == 0))
def test_a_frame_of_several_polls_equals_each_value_alone(values: list[float]) -> None:
    scales, factors = [1.0, 0.01, 1.0], [1.0, 1.0, 0.001]  # V, x0.01, W -> kW
    raw = np.asarray(values, dtype=">f4").reshape(-1, 3)
    exact = exact_of(scales, [0.0] * 3, factors)
    rounding = rounding_of([arithmetic_decimals(s, 0.0, f) for s, f in zip(scales, factors, strict=True)])
    with np.errstate(invalid="ignore", over="ignore"):  # as FrameDecoder calls it
        frame = shown_columns(raw, np.asarray(scales), np.zeros(3), np.asarray(factors), rounding, exact)
    alone = [[shown_value(float(x), dtype=">f4", scale=s, offset=0.0, factor=f)
              for x, s, f in zip(row, scales, factors, strict=True)] for row in raw.tolist()]
    # Equal as numbers: a -0.0 in a pass that some value sends down the general path comes out 0.0 (as before
    # the fast path: -0.0 * scale + 0.0), alone it stays -0.0.
    assert alone == frame.tolist()
