"""TOU sum check (issue 24 item 2): per meter and direction, between two complete reads (the total and
the same tariffs at one timestamp, as one poll or telegram gives them), the tariffs' advances add up
to the total's advance within the sum tolerance (sums.py). A failure flags every row of the read
TOU_SUM_CHECK (suspect) and raises one `anomaly` with both figures when an episode starts.

Rows that cannot be compared are left out: rejected, regressed, conflicting and estimated rows (a
total and its tariffs are estimated one by one and need not add up). A read with a rollover is not
judged but is the reference of the next one. State (the last complete read of each meter's group)
survives across batches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.model import Channel, Event, EventKind, Quality, Severity
from gateway.model.frame import NO_TS, SeriesTable, from_us
from gateway.model.readings import TOU_CHANNELS
from gateway.validate.checks import F64, I64, group_firsts, group_lasts, shifted
from gateway.validate.status import REJECT
from gateway.validate.sums import mismatch
from gateway.validate.thresholds import Thresholds

TOU_SUM_CHECK = int(Quality.TOU_SUM_CHECK)
_LEFT_OUT = int(REJECT | Quality.REGRESSION | Quality.DUPLICATE_CONFLICT | Quality.ESTIMATED)
_TOTAL_BIT = 1 << 8  # in a read's mask: the total is there (tariffs are bits 0..3)
_TARIFF_OF = {tariff: (total, 1 << k) for total, tariffs in TOU_CHANNELS.items() for k, tariff in enumerate(tariffs)}


class TouSumCheck:
    """Stateful over batches; `check` takes a batch's rows grouped or not, in any order."""

    def __init__(self, series: SeriesTable, thresholds: Callable[[str, Channel], Thresholds]) -> None:
        self._series = series
        self._thresholds = thresholds
        self._known = 0
        self._group = np.empty(0, np.int64)  # per series: its (meter, total) group, -1 none
        self._bit = np.empty(0, np.int64)  # per series: its bit in a read's mask
        self._groups: dict[tuple[str, Channel], int] = {}
        self._names: list[tuple[str, Channel]] = []
        # per group: the last complete read, its tariff mask, whether it failed; the tolerance
        self._ts = np.empty(0, np.int64)
        self._total = np.empty(0, np.float64)
        self._parts = np.empty(0, np.float64)
        self._mask = np.empty(0, np.int64)
        self._failing = np.empty(0, bool)
        self._res = np.empty(0, np.float64)
        self._rel = np.empty(0, np.float64)
        self._steps = np.empty(0, np.float64)

    def _sync(self) -> None:
        n = len(self._series)
        if n == self._known:
            return
        group, bit = [], []
        for meter, channel in self._series.keys[self._known:n]:
            total, b = (channel, _TOTAL_BIT) if channel in TOU_CHANNELS else _TARIFF_OF.get(channel, (None, 0))
            if total is None:
                group.append(-1)
                bit.append(0)
                continue
            g = self._groups.get((meter, total))
            if g is None:
                g = self._groups[(meter, total)] = len(self._names)
                self._names.append((meter, total))
                t = self._thresholds(meter, total)
                self._ts = np.append(self._ts, NO_TS)
                self._total, self._parts = np.append(self._total, np.nan), np.append(self._parts, np.nan)
                self._mask, self._failing = np.append(self._mask, 0), np.append(self._failing, False)
                self._res = np.append(self._res, t.resolution)
                self._rel = np.append(self._rel, t.sum_tolerance)
                self._steps = np.append(self._steps, t.sum_resolutions)
            group.append(g)
            bit.append(b)
        self._group = np.concatenate([self._group, np.asarray(group, np.int64)])
        self._bit = np.concatenate([self._bit, np.asarray(bit, np.int64)])
        self._known = n

    def idle(self) -> bool:
        """No meter has time-of-use registers: nothing to judge."""
        self._sync()
        return not self._names

    def check(self, s: I64, t: I64, v: F64, q: I64) -> tuple[I64, list[Event]]:
        """TOU_SUM_CHECK bits per row (zeros elsewhere) and the anomaly events of episodes that start."""
        self._sync()
        flags = np.zeros(s.size, np.int64)
        if not self._names:
            return flags, []
        rows = np.flatnonzero((self._group[s] >= 0) & ((q & _LEFT_OUT) == 0))
        if rows.size == 0:
            return flags, []
        g, rt = self._group[s[rows]], t[rows]
        order = np.lexsort((rt, g))
        rows, g, rt = rows[order], g[order], rt[order]
        bits, rv = self._bit[s[rows]], v[rows]
        new = np.ones(rows.size, bool)
        new[1:] = (g[1:] != g[:-1]) | (rt[1:] != rt[:-1])
        starts = np.flatnonzero(new)
        seg = np.cumsum(new) - 1
        is_total = bits == _TOTAL_BIT
        n_total = np.bincount(seg, weights=is_total, minlength=starts.size)
        total = np.bincount(seg, weights=np.where(is_total, rv, 0.0), minlength=starts.size)
        parts = np.bincount(seg, weights=np.where(is_total, 0.0, rv), minlength=starts.size)
        mask = np.bitwise_or.reduceat(bits, starts)
        rolled = np.bitwise_or.reduceat(q[rows] & int(Quality.ROLLOVER), starts) != 0
        # Complete: the total once and at least one tariff (a repeated row would be a conflict).
        complete = (n_total == 1) & ((mask & ~_TOTAL_BIT) != 0)
        c = np.flatnonzero(complete)
        if c.size == 0:
            return flags, []
        cg, ct, ctot, cpar, cmask = g[starts[c]], rt[starts[c]], total[c], parts[c], mask[c]
        first = group_firsts(cg)
        prev_t = np.where(first, self._ts[cg], shifted(ct, NO_TS))
        prev_tot = np.where(first, self._total[cg], shifted(ctot, np.nan))
        prev_par = np.where(first, self._parts[cg], shifted(cpar, np.nan))
        prev_mask = np.where(first, self._mask[cg], shifted(cmask, 0))
        judged = (prev_t != NO_TS) & (prev_t < ct) & (prev_mask == cmask) & ~rolled[c]
        advance, tariffs = (ctot - prev_tot).astype(np.float64), (cpar - prev_par).astype(np.float64)
        failed = judged & mismatch(advance, tariffs, self._res[cg], self._rel[cg], self._steps[cg])
        bad_seg = np.zeros(starts.size, bool)
        bad_seg[c[failed]] = True
        flags[rows[bad_seg[seg]]] = TOU_SUM_CHECK
        # Episodes: a failure after a judged read that passed (or none before) starts one.
        was = np.where(first, self._failing[cg], shifted(failed, False))
        events = [self._event(int(cg[i]), int(ct[i]), int(prev_t[i]), float(advance[i]), float(tariffs[i]))
                  for i in np.flatnonzero(failed & ~was).tolist()]
        last = group_lasts(cg)
        lg = cg[last]
        self._ts[lg], self._total[lg], self._parts[lg], self._mask[lg] = ct[last], ctot[last], cpar[last], cmask[last]
        jl = np.flatnonzero(judged)
        if jl.size:
            jlast = jl[group_lasts(cg[jl])]
            self._failing[cg[jlast]] = failed[jlast]
        return flags, events

    def _event(self, g: int, ts: int, since: int, advance: float, tariffs: float) -> Event:
        meter, total = self._names[g]
        allowed = max(self._rel[g] * abs(advance), self._steps[g] * self._res[g])
        return Event(from_us(ts), meter, EventKind.ANOMALY, Severity.WARNING,
                     f"{total.value}: tou_sum_check: the tariff registers advanced {tariffs:.6g}, the total "
                     f"{advance:.6g} since {from_us(since).isoformat()} (tolerance {allowed:.6g})")


__all__ = ["TouSumCheck"]
