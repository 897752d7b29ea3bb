"""Vectorised VEE checks. Each takes numpy arrays of one batch (grouped per series) and
returns a Quality bit array; none loops over readings in Python.

Series: one (meter_id, channel). Arrays are sorted by (series, ts); `prev` holds, for
each row, the previous value of the same series (from the batch or from the stored
history), NaN when there is none.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.model.readings import Quality

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def regression_and_rollover(values: F64, prev: F64, modulus: F64, resolution: float = 1e-6) -> I64:
    """Regression of a cumulative register, unless it is a rollover at the modulus.

    A drop bigger than half the modulus is a wrap (consumption = cur + modulus - prev,
    flagged ROLLOVER, not suspect). Any other drop beyond the register's resolution is
    REGRESSION. `modulus` is NaN where the register does not wrap.
    """
    flags = np.zeros(values.shape, dtype=np.int64)
    delta = values - prev
    dropped = delta < -resolution  # NaN prev compares False: first reading of a series
    wraps = dropped & ~np.isnan(modulus) & (-delta > modulus / 2)
    flags[wraps] |= int(Quality.ROLLOVER)
    flags[dropped & ~wraps] |= int(Quality.REGRESSION)
    return flags


def consumption(values: F64, prev: F64, modulus: F64) -> F64:
    """Delta of a cumulative register across a rollover; NaN where there is no previous value."""
    delta = values - prev
    wrapped = (delta < 0) & ~np.isnan(modulus) & (-delta > modulus / 2)
    return np.where(wrapped, delta + modulus, delta)


def out_of_range(values: F64, low: F64, high: F64) -> I64:
    """OUT_OF_RANGE where a value is outside its channel's physical limits (NaN = no limit)."""
    bad = (values < low) | (values > high)
    return np.where(bad, int(Quality.OUT_OF_RANGE), 0).astype(np.int64)
