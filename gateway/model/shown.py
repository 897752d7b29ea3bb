"""Values as the meter shows them, not as a float holds them.

A meter's display shows 12345.6 kWh; its float32 register holds 12345.599609375, the float32
nearest to it. Every surface (store, API, feed, consumption, bills, CSV) carries the decimal the
meter shows, as the float64 nearest to it, so its shortest repr is that decimal:

- a float32 register: the shortest decimal that reads back as the same float32 (12345.6, 50.02,
  229.8), found from the float32's spacing: the decimals k0 = ceil(-log10(ulp)) always hold one,
  k0 - 1 sometimes does; the nearest multiple of 10^-k is the candidate, kept if it reads back;
- an integer register: the integer, exact;
- a float64 register: the float64 as read (its repr is already its shortest decimal);
- then times scale, plus offset, times the unit's conversion factor, rounded to the decimals the
  exact decimal product has (a register's decimals + the scale's + the factor's), so ×0.01 kWh
  gives exactly two decimals. At most 15 significant digits: what a float64 holds exactly.

Vectorised for the pipeline's frames; `shown_value` does one value the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: Significant decimal digits a float64 holds exactly.
MAX_DIGITS = 15
#: Decimals meaning "do not round" (a float64 register's value, or one that found no short decimal).
UNROUNDED = 1 << 20


def decimals_of(x: float) -> int:
    """Decimals after the point of `x`'s shortest repr (0.001 -> 3, 2.0 -> 0, 1e-05 -> 5, 1200.0 -> 0)."""
    if not math.isfinite(x):
        return 0
    mantissa, _, exponent = repr(float(x)).partition("e")
    fraction = mantissa.partition(".")[2].rstrip("0")
    return max(0, len(fraction) - int(exponent or 0))


#: 10^k for k in 0..MAX_POWER, looked up rather than computed (np.power costs more than the rest).
MAX_POWER = 300
#: The largest power of ten a float64 holds exactly.
_EXACT_POWER = 22
_POW10 = np.asarray([10.0**k for k in range(MAX_POWER + 1)])
#: Per float32 exponent field (0..255): k0 = ceil(-log10(ulp)), the decimals that always hold a
#: decimal reading back as the float32 (ulp = 2^(e - 150) for e >= 1, 2^-149 for subnormals).
_K0 = np.asarray([math.ceil(-math.log10(2.0 ** (max(e, 1) - 150))) for e in range(256)], dtype=np.int64)
#: `_digits`' tables: 10^(k0 - 1) and 10^k0 for its two tries, and k0. Its exponent field 0 can only
#: be a zero (it leaves subnormals to the general path): 0 has no decimals, so a zero never pushes a
#: frame off the exact path.
_DIGITS_K0 = np.concatenate(([1], _K0[1:]))
_DIGITS_SHORTER = np.asarray([10.0 ** (k - 1) if k >= 1 else 1.0 for k in _DIGITS_K0.tolist()])
_DIGITS_USUAL = np.asarray([10.0**k if k >= 0 else 1.0 for k in _DIGITS_K0.tolist()])
#: The highest exponent field whose k0 - 1 is still >= 0 (values below 2^24, most meters' all).
_FAST_MAX = max(e for e in range(256) if _K0[e] >= 1)
#: Exponent fields whose three tries use only exact powers of ten (10^-22 .. 10^22).
_EXACT_MIN = min(e for e in range(256) if _K0[e] + 1 <= 22)
_EXACT_MAX = max(e for e in range(256) if _K0[e] - 1 >= -22) + 1
#: The fast path's test on a float32's bits without its sign: below _FAST_LIMIT (|x| < 2^24) and
#: not 0 < bits <= _SMALL (|x| below 2^-46, where the tries would need inexact powers).
_ABS = np.uint32(0x7FFFFFFF)
_ONE = np.uint32(1)
_FAST_LIMIT = (_FAST_MAX + 1) << 23
_SHIFT = np.uint32(23)  # a float32's bits >> 23: its sign and exponent field
_SMALL = np.uint32((_EXACT_MIN << 23) - 1)


def _round_to(x: F64, k: I64) -> F64:
    """`x` rounded to `k` decimals (k may be negative: to tens, hundreds, ...), as the float64
    nearest to that decimal: powers of ten up to 10^22 are exact, and so is the one division."""
    power = _POW10[np.minimum(np.abs(k), MAX_POWER)]
    rounded: F64 = np.where(k >= 0, np.rint(x * power) / power, np.rint(x / power) * power)
    return rounded


def shortest_float32(x32: npt.NDArray[np.float32]) -> tuple[F64, I64]:
    """Each float32 as the float64 nearest to the shortest decimal that reads back as it, and that
    decimal's decimals (negative for 1.2e10: rounded to 10^4 or coarser). Non-finite values come
    back as they are, with UNROUNDED decimals."""
    with np.errstate(invalid="ignore", over="ignore"):
        out, decimals = _shortest(np.ascontiguousarray(x32, dtype=np.float32), decimals=True)
    assert decimals is not None
    return out, decimals


def _shortest(x32: npt.NDArray[np.float32], *, decimals: bool) -> tuple[F64, I64 | None]:
    """shortest_float32 under the caller's errstate, in as few numpy calls as the usual frame allows
    (a pass of a poll or two decodes a dozen values: the calls, not the values, are the cost)."""
    found = _digits(x32)
    if found is None:
        return _shortest_general(x32)
    _, own, shown = found
    return shown, own if decimals else None


def _digits(x32: npt.NDArray[np.float32]) -> tuple[F64, I64, F64] | None:
    """For the usual float32s (0, or 1.4e-14 <= |x| < 2^24): the shortest decimal that reads back as
    each, as its digits (an integer, as a float64), its decimals and the float64 nearest to it; None
    when one is not usual."""
    absbits = x32.view(np.uint32) & _ABS
    if not absbits.size or int(absbits.max()) >= _FAST_LIMIT or ((absbits - _ONE) < _SMALL).any():
        return None
    # k0 - 1 decimals when they read back (then they are the shorter), else k0.
    x = x32.astype(np.float64)
    exponent = (absbits >> 23).astype(np.intp)  # intp: numpy gathers fastest with its own index type
    power = _DIGITS_SHORTER[exponent]
    short_digits = np.rint(x * power)
    short_ok = (short_digits / power).astype(np.float32) == x32
    power = _DIGITS_USUAL[exponent]
    usual_digits = np.rint(x * power)
    digits = np.where(short_ok, short_digits, usual_digits)
    own = _DIGITS_K0[exponent] - short_ok.view(np.int8)
    # Just above a power of two the spacing below is half the spacing above: there k0 may miss.
    shown = digits / _POW10[own]
    if not (shown.astype(np.float32) == x32).all():
        return None
    return digits, own, shown


#: Up to this many values `_exact_f32` is the cheaper: fewer calls; beyond, `_digits`' separate tries
#: on arrays half the size cost less (a round of 5,000 polls decoded about 5 % slower through it).
FEW_VALUES = 1024


def _exact_f32(x32: npt.NDArray[np.float32], exact: Exact) -> F64 | None:
    """`shown_columns`' exact path for float32s in a dozen numpy calls (a pass of a poll or two pays
    for calls, not values): both tries of `_digits` at once on a leading axis of two, the same float64
    operations on the same numbers, so the same values. None when a value is not usual, reads back
    at neither try, or its decimals with the column's might pass 10^22 (the caller then takes the
    path that decides that exactly)."""
    tries = exact.tries.take(x32.view(np.uint32) >> _SHIFT, axis=1)  # (2, polls, registers)
    digits = np.rint(x32.astype(np.float64) * tries)
    back = (digits / tries).astype(np.float32) == x32
    short = back[0]
    if b"\0" in (short | back[1]).tobytes():  # a bytes search: ndarray.all() costs two ufunc calls
        return None
    # 10^(own + places) as 10^own x 10^places: both exact, and so is their product up to 10^22.
    shown = (digits * exact.ints) / (tries * exact.powers)
    found: F64 = np.where(short, shown[0], shown[1])
    return found


def _shortest_general(x32: npt.NDArray[np.float32]) -> tuple[F64, I64]:
    """`_shortest` for any float32: negative decimals, the fallback just above a power of two, and
    the values past exact powers of ten."""
    x32 = np.ascontiguousarray(x32, dtype=np.float32)
    x = x32.astype(np.float64)
    # As intp: numpy gathers with its own index type several times faster than with uint32.
    exponent = ((x32.view(np.uint32) >> 23) & 0xFF).astype(np.intp)
    with np.errstate(invalid="ignore", over="ignore"):
        k0 = _K0[exponent]
        shorter = _round_to(x, k0 - 1)
        short_ok = shorter.astype(np.float32) == x32
        out = np.where(short_ok, shorter, _round_to(x, k0))
        decimals = k0 - short_ok
        wrong = out.astype(np.float32) != x32
        if wrong.any():
            # Just above a power of two the spacing below is half the spacing above: k0 + 1.
            finer = _round_to(x, k0 + 1)
            fixed = wrong & (finer.astype(np.float32) == x32)
            lost = wrong & ~fixed  # NaN only: the float stays itself
            out = np.where(fixed, finer, np.where(lost, x, out))
            decimals = np.where(fixed, k0 + 1, np.where(lost, UNROUNDED, decimals))
        # Past 10^22 the powers of ten are no longer exact floats: numpy's own shortest repr
        # (Dragon4), one value at a time, for the values no meter shows (|x| below 2^-46, about
        # 1.4e-14, or from 2^97, about 1.6e29, where the tries would need such powers; NaN, inf).
        extreme = (exponent >= _EXACT_MAX) | ((exponent < _EXACT_MIN) & (x32 != 0))
        if extreme.any():
            out = out.copy()
            out[extreme] = [float(str(v)) for v in x32[extreme]]
    return out, decimals


def round_shown(values: F64, decimals: I64) -> F64:
    """`values` rounded to `decimals` where the result keeps at most MAX_DIGITS significant digits;
    UNROUNDED, NaN, infinities, and values whose decimals would pass MAX_DIGITS left as they are."""
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.minimum(decimals, MAX_POWER)
        # Only with exact powers of ten (|k| <= 22): beyond, rounding would add the noise it removes.
        todo = (np.abs(k) <= _EXACT_POWER) & (np.abs(values) * _POW10[np.abs(k)] < 10.0**MAX_DIGITS)
        if todo.all():
            return _round_to(values, k)
        return np.where(todo, _round_to(values, np.where(todo, k, 0)), values)


#: Which registers of a frame's group are rounded, and to how many decimals beyond their own: the
#: columns whose scale, offset or conversion adds decimals (None: every column), and those decimals.
Rounding = tuple[npt.NDArray[np.intp] | None, I64]


def rounding_of(added: list[int]) -> Rounding | None:
    """The Rounding of a group whose registers' arithmetic adds `added` decimals (arithmetic_decimals)."""
    if not any(added):
        return None
    if all(added):
        return None, np.asarray([added], dtype=np.int64)
    cols = np.flatnonzero(added).astype(np.intp)
    return cols, np.asarray([[added[c] for c in cols]], dtype=np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class Exact:
    """A group's scale x factor as an exact decimal per column, integer / 10^decimals, when no column
    has an offset and every integer is below 2^21 (so a float32's at most 9 digits, or a 32-bit
    register, times it stay below 2^53: exact in a float64)."""

    ints: F64  # (1, registers): the integers, as float64
    places: I64  # (1, registers): their decimals
    powers: F64  # (1, registers): 10^places
    #: `_exact_f32`'s tries, (2, 512), by a float32's top nine bits (sign, exponent field): 10^(k0 - 1)
    #: and 10^k0; NaN, which never reads back, where `_digits` would not take the value (past 2^24,
    #: below 2^-46, NaN and infinities) or where k0 decimals and a column's might pass 10^22.
    tries: F64


def exact_of(scales: list[float], offsets: list[float], factors: list[float]) -> Exact | None:
    """The Exact of a group's registers, or None."""
    ints, places = [], []
    for scale, offset, factor in zip(scales, offsets, factors, strict=True):
        product = Decimal(repr(float(scale))) * Decimal(repr(float(factor)))
        sign, digits, exponent = product.as_tuple()
        if offset != 0 or not isinstance(exponent, int) or -exponent > _EXACT_POWER:
            return None
        whole = int("".join(map(str, digits))) * 10 ** max(exponent, 0)
        if whole >= 1 << 21:
            return None
        ints.append(-whole if sign else whole)
        places.append(max(-exponent, 0))
    as_ints, as_places = np.asarray([ints], dtype=np.float64), np.asarray([places], dtype=np.int64)
    field = np.arange(512) & 0xFF  # a float32's exponent field, by its top nine bits
    usual = (field >= _EXACT_MIN) & (field <= _FAST_MAX) | (field == 0)
    usual &= _DIGITS_K0[field] + max(places) <= _EXACT_POWER
    tries = np.where(usual, np.tile(np.stack([_DIGITS_SHORTER, _DIGITS_USUAL]), 2), np.nan)
    return Exact(as_ints, as_places, _POW10[as_places], tries)


def shown_columns(raw: npt.NDArray[np.generic], scale: F64, offset: F64, factor: F64,
                  rounding: Rounding | None, exact: Exact | None = None) -> F64:
    """A frame's group of registers (polls x registers of one numpy type) as shown, under the caller's
    errstate: float32 as its shortest decimals, then `* scale + offset`, `* factor`, and the columns
    whose arithmetic adds decimals rounded to their own plus those (float64 registers: never).
    With `exact` (no offsets, small decimal factors): the decimal's digits times the factor's over
    one exact power of ten, the nearest float64 in one division and no rounding pass."""
    if exact is not None:
        ints, places = exact.ints, exact.places
        if raw.dtype.kind == "f" and raw.dtype.itemsize == 4:
            x32 = raw.astype(np.float32)
            fast = _exact_f32(x32, exact) if x32.size <= FEW_VALUES else None
            if fast is not None:
                return fast
            found = _digits(x32)
            if found is not None:
                digits, places_own, _ = found
                total = places_own + places
                if int(total.max()) <= _EXACT_POWER:
                    shown: F64 = (digits * ints) / _POW10[total]
                    return shown
        elif raw.dtype.kind in "iu" and raw.dtype.itemsize <= 4:  # |raw| < 2^32
            exact_ints: F64 = (raw.astype(np.float64) * ints) / _POW10[places]
            return exact_ints
    own: I64 | None = None
    if raw.dtype.kind == "f" and raw.dtype.itemsize == 4:
        shown, own = _shortest(raw.astype(np.float32), decimals=rounding is not None)
        v = shown * scale + offset
    else:
        v = raw.astype(np.float64) * scale + offset
    v *= factor
    if rounding is None:
        return v
    cols, added = rounding
    if cols is None:
        return _round_columns(v, added if own is None else own + added)
    v[:, cols] = _round_columns(v[:, cols], added if own is None else own[:, cols] + added)
    return v


def _round_columns(v: F64, k: I64) -> F64:
    """`v` rounded to `k` decimals, k taken in 0..22 (fewer than 0 only drops digits an integer has
    not; more than 22 are past exact powers of ten), where at most MAX_DIGITS significant digits remain."""
    power = _POW10[np.clip(k, 0, _EXACT_POWER)]
    rounded = np.rint(v * power)
    rounded /= power
    kept: F64 = np.where(np.abs(v) * power < 10.0**MAX_DIGITS, rounded, v)
    return kept


def arithmetic_decimals(scale: float, offset: float, factor: float) -> int:
    """Decimals that `raw * scale + offset`, times `factor`, adds to the raw number's own."""
    d_factor = decimals_of(factor)
    return max(decimals_of(scale) + d_factor, decimals_of(offset) + d_factor)


def shown_value(number: int | float, *, dtype: str, scale: float, offset: float, factor: float) -> float:
    """One register's number exactly as `shown_columns` gives it in a frame; `dtype` is the register's
    numpy type as the frame views its words (">f4", ">i2", ...)."""
    raw = np.asarray([[number]], dtype=np.dtype(dtype).newbyteorder("="))
    float64 = raw.dtype.kind == "f" and raw.dtype.itemsize == 8
    rounding = None if float64 else rounding_of([arithmetic_decimals(scale, offset, factor)])
    exact = None if float64 else exact_of([scale], [offset], [factor])
    with np.errstate(invalid="ignore", over="ignore"):  # garbage words: inf and NaN, judged by the caller
        v = shown_columns(raw, np.asarray([scale]), np.asarray([offset]), np.asarray([factor]), rounding, exact)
    return float(v[0, 0])


def shown_sum(*terms: float) -> float:
    """The sum of values as their decimals add up (12346.1 - 12345.6 is 0.5, not 0.5000000000018):
    each float64 read as its shortest decimal, added exactly, then the float64 nearest."""
    total = sum((Decimal(repr(float(t))) for t in terms), Decimal(0))
    return float(total)


__all__ = [
    "MAX_DIGITS",
    "UNROUNDED",
    "Exact",
    "Rounding",
    "arithmetic_decimals",
    "decimals_of",
    "exact_of",
    "round_shown",
    "rounding_of",
    "shortest_float32",
    "shown_columns",
    "shown_sum",
    "shown_value",
]
