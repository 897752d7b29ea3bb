"""Stage 3 entry: flag a batch of readings, set their status, fill gaps, and raise events.

Everything runs on a ReadingFrame (numpy columns of the whole batch) against per-series
state arrays: a batch of 35,000 readings costs a few dozen array operations, not 35,000
Python iterations. `validate_frame` is the entry point (the pipeline hands it the frame its
decoder made); `validate(list[Reading])` converts a list to a frame and back around it.

Checks, in the order they run (names utility engineers know; thresholds in thresholds.py):

- duplicates: same (meter, channel, ts) with another value -> DUPLICATE_CONFLICT (Oracle
  "Duplicate IMD Check"); an identical repeat is a no-op.
- High/Low limits -> OUT_OF_RANGE (NaN and infinities too); time tolerance -> FUTURE_TS,
  STALE_TS, CLOCK_SKEW.
- Gap Check -> GAP on the first read after missing intervals (the meter's interval is known).
- Negative Consumption Check -> REGRESSION, unless it is a wrap at the register's modulus
  -> ROLLOVER (consumption counted across the wrap; `modulus=<float>` in the note).
- Interval Spike Check -> SPIKE (robust: median and MAD of the meter's own last intervals).
- Repeated Value -> FLATLINE; Zero Consumption Check -> ZERO_CONSUMPTION.
- device-reported tamper arrives as TAMPER from the normaliser.

Status follows from the flags (status.py). Events: one `anomaly` when a flag starts on a
series (not one per reading while it lasts), `inspection_recommended` per inspection.py.
Estimation (estimate.py) fills the missing boundaries of a gap once the read closing it
arrives; estimates are new rows (status estimated, source estimate) and never replace a read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.model import Channel, Event, EventKind, Quality, Reading, Severity, Source, Status, Utility
from gateway.model.frame import NO_TS, ReadingFrame, SeriesTable, from_us, to_us
from gateway.model.readings import CUMULATIVE_CHANNELS
from gateway.validate import checks
from gateway.validate.checks import US_PER_HOUR, group_firsts, group_lasts, last_before, shifted
from gateway.validate.estimate import Estimate, estimate_gap
from gateway.validate.inspection import InspectionTracker
from gateway.validate.state import SeriesState
from gateway.validate.status import REJECT, SUSPECT, status_codes, status_for
from gateway.validate.thresholds import Thresholds, ThresholdTable, limit

F64 = checks.F64
I64 = checks.I64

REGRESSION = int(Quality.REGRESSION)
ROLLOVER = int(Quality.ROLLOVER)
TAMPER = int(Quality.TAMPER)
#: Flags that raise an anomaly event when they start on a series.
EVENT_FLAGS = (Quality.REGRESSION | Quality.SPIKE | Quality.FLATLINE | Quality.ZERO_CONSUMPTION
               | Quality.OUT_OF_RANGE | Quality.FUTURE_TS | Quality.STALE_TS | Quality.CLOCK_SKEW)
#: Flags whose start raises an event: an anomaly, or an inspection from tamper.
RAISING = int(EVENT_FLAGS | Quality.TAMPER)
_WHY = {
    Quality.REGRESSION: "the register went backwards",
    Quality.SPIKE: "consumption far above the meter's usual",
    Quality.FLATLINE: "the register stopped moving for longer than usual",
    Quality.ZERO_CONSUMPTION: "no consumption",
    Quality.OUT_OF_RANGE: "value impossible for the channel",
    Quality.FUTURE_TS: "timestamp in the future",
    Quality.STALE_TS: "timestamp too old",
    Quality.CLOCK_SKEW: "device clock off",
}
US = 1_000_000


class Validator:
    """VEE for one gateway: per-series state survives across batches, and is seeded from the
    store at start (`seed`, `seed_history`) so the first read after a restart is still checked.

    `moduli` {(meter, channel): modulus in canonical units}, `intervals` {meter: seconds},
    `utilities` {meter: utility}, `bidirectional` meters may read negative power.
    Estimation runs for meters read every `estimate_min_interval` seconds or slower (interval
    data), not for live monitoring at sub-minute rates.
    """

    def __init__(self, moduli: Mapping[tuple[str, Channel], float] | None = None, *,
                 intervals: Mapping[str, float] | None = None, utilities: Mapping[str, Utility] | None = None,
                 thresholds: ThresholdTable | None = None, bidirectional: Collection[str] = (),
                 window: int = 672, stats_every: int | None = None,
                 estimate: bool = True, estimate_min_interval: float = 60.0, series: SeriesTable | None = None) -> None:
        self.series = series or SeriesTable()
        self._moduli = dict(moduli or {})
        self._intervals = dict(intervals or {})
        self._utilities = dict(utilities or {})
        self._table = thresholds or ThresholdTable()
        self._bidirectional = frozenset(bidirectional)
        self._estimate = estimate
        self._estimate_min_us = estimate_min_interval * US
        self._state = SeriesState(window)
        self._loosest = _EVERY_ROW
        self._every = stats_every or max(1, window // 8)
        self._resolved: dict[tuple[Utility, Channel], Thresholds] = {}
        self._inspection = InspectionTracker(self._inspection_policy)
        self._replaying = False

    # -- configuration per series ---------------------------------------------------------
    def thresholds(self, meter_id: str, channel: Channel) -> Thresholds:
        utility = self._utilities.get(meter_id, Utility.ELECTRICITY)
        t = self._resolved.get((utility, channel))
        if t is None:
            t = self._resolved[(utility, channel)] = self._table.resolve(utility, channel)
        return t

    def _inspection_policy(self, meter_id: str) -> tuple[int, float]:
        t = self.thresholds(meter_id, Channel.ENERGY_IMPORT)
        return t.inspection_regressions, t.inspection_days

    def _sync(self) -> None:
        """Give series the table learnt since the last batch their state and thresholds."""
        st = self._state
        old, new = st.size, len(self.series)
        if new <= old:
            return
        st.ensure(new)
        # Series with the same settings are written together: a fleet has few distinct ones.
        groups: dict[tuple[object, ...], list[int]] = {}
        per_meter: dict[str, tuple[object, ...]] = {}
        moduli = self._moduli
        for sid, (meter_id, channel) in enumerate(self.series.keys[old:new], start=old):
            of_meter = per_meter.get(meter_id)
            if of_meter is None:
                of_meter = per_meter[meter_id] = (self._utilities.get(meter_id, Utility.ELECTRICITY),
                                                  meter_id in self._bidirectional, self._intervals.get(meter_id, 0.0))
            groups.setdefault((*of_meter, channel, moduli.get((meter_id, channel))), []).append(sid)
        cumulative = 0
        for key, sids in groups.items():
            rows = np.asarray(sids, dtype=np.int64)
            for name, value in self.settings(*self.series.keys[sids[0]]).items():
                st.s[name][rows] = value
            cumulative += len(sids) if key[3] in CUMULATIVE_CHANNELS else 0
        st.expect_cumulative(cumulative)
        self._loosest = _Loosest.of(st.s, new)

    def settings(self, meter_id: str, channel: Channel) -> dict[str, float | int | bool]:
        """Everything the checks need to know about one series, in the units they compute in (µs)."""
        t = self.thresholds(meter_id, channel)
        low = limit(t.low, -np.inf)
        if channel is Channel.POWER and meter_id in self._bidirectional and low == 0.0:
            low = -np.inf  # a meter that exports reads negative power
        interval = int(self._intervals.get(meter_id, 0.0) * US)
        return {
            "resolution": t.resolution, "spike_k": t.spike_k, "spike_peak": t.spike_peak_factor,
            "spike_min_rate": t.spike_min_rate, "spike_min_samples": t.spike_min_samples,
            "spike_min_us": t.spike_min_days * 86400 * US,
            "flat_min_us": t.flatline_min_hours * US_PER_HOUR, "flat_factor": t.flatline_factor,
            "zero_us": limit(t.zero_consumption_hours, np.inf) * US_PER_HOUR, "gap_tolerance": t.gap_tolerance,
            "future_us": t.future_seconds * US, "stale_us": t.stale_hours * US_PER_HOUR,
            "skew_us": t.skew_seconds * US, "low": low, "high": limit(t.high, np.inf),
            "linear_us": t.estimate_linear_hours * US_PER_HOUR,
            "estimate_max_us": t.estimate_max_hours * US_PER_HOUR,
            "modulus": self._moduli.get((meter_id, channel), np.nan), "interval_us": interval,
            "estimate": self._estimate and interval > 0 and interval >= self._estimate_min_us,
        }

    # -- seeding from the store -----------------------------------------------------------
    def seed(self, last: Iterable[tuple[str, Channel, datetime, float]]) -> None:
        """The last stored value of each cumulative series: the reference for its next read.
        Series that already have newer state (e.g. from `seed_history`) keep it."""
        rows = [(self.series.id(m, c), to_us(ts), v) for m, c, ts, v in last]
        self._sync()
        s = self._state.s
        for sid, ts, value in rows:
            if ts > s["seen_ts"][sid]:
                s["seen_ts"][sid] = s["ref_ts"][sid] = s["run_start"][sid] = ts
                s["seen_val"][sid] = s["ref_val"][sid] = value

    def seed_history(self, readings: Sequence[Reading]) -> None:
        """Replay stored cumulative readings (from `Store.cumulative_history`) through the checks
        to rebuild the windows: references, robust statistics, flat runs, hour-of-week profiles,
        regression episodes. Nothing is emitted. Estimates and rejected reads are not history."""
        real = [r for r in readings if r.source is not Source.ESTIMATE and r.status is not Status.REJECTED]
        if not real:
            return
        self._replaying = True
        try:
            frame = ReadingFrame.from_readings(real, self.series)
            frame = frame.take(np.lexsort((frame.ts, frame.series)))
            # Replay in rounds holding each series' k-th reading, as live polls arrive, so the
            # windows end up exactly as if the gateway had never stopped.
            first = group_firsts(frame.series)
            rank = np.arange(len(frame)) - checks.group_start_index(first)
            order = np.argsort(rank, kind="stable")
            ends = np.cumsum(np.bincount(rank))
            for lo, hi in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True):
                self.validate_frame(frame.take(order[lo:hi]))
        finally:
            self._replaying = False

    def seed_inspections(self, events: Iterable[Event]) -> None:
        """inspection_recommended events already stored: no second order within the window."""
        for e in events:
            if e.kind is EventKind.INSPECTION_RECOMMENDED and e.meter_id is not None:
                self._inspection.seed(e.meter_id, to_us(e.ts))

    # -- validation -------------------------------------------------------------------------
    def validate(self, readings: Sequence[Reading]) -> tuple[list[Reading], list[Event]]:
        """Flagged readings (ordered by meter, channel, ts; estimates included) and events."""
        if not readings:
            return [], []
        frame, events = self.validate_frame(ReadingFrame.from_readings(readings, self.series), ordered=True)
        return frame.to_readings(self.series), events

    def validate_frame(self, frame: ReadingFrame, *, ordered: bool = False) -> tuple[ReadingFrame, list[Event]]:
        """Flag, set status, estimate; returns the frame (rows regrouped by series where needed,
        exact repeats within the batch dropped, estimates appended) and the events.

        `ordered` sorts rows by (meter_id, channel, ts); otherwise rows keep their order when
        every series appears once, which is how the pipeline delivers polls.
        """
        n = len(frame)
        if n == 0:
            return frame, []
        self._sync()
        st = self._state.s
        f = self._grouped(frame, ordered)
        first = group_firsts(f.series)
        # Usually every series appears once: no repeats to look for, no carrying of state from
        # row to row inside a series.
        repeats = not bool(first.all())
        same = None
        if repeats:
            f, first, same = _drop_exact_repeats(f, first)
        s, t, v = f.series, f.ts, f.value
        seen_ts = st["seen_ts"][s]
        conflict = same
        again = t == seen_ts
        if again.any():  # a repeat of the last read: only its value is worth gathering
            changed_value = again & (v != st["seen_val"][s])
            conflict = changed_value if conflict is None else conflict | changed_value
        main = t > seen_ts if conflict is None else ~conflict & (t > seen_ts)

        received = f.received
        q = f.quality | checks.out_of_range(v, st["low"][s], st["high"][s])
        self._flag_clock(q, s, t, received)
        if conflict is not None and conflict.any():
            q[conflict] |= int(Quality.DUPLICATE_CONFLICT)

        events: list[Event] = []
        estimates = None
        notes: dict[int, str] = {}
        if main.any():
            # Usually every row is new: views instead of copies.
            every = bool(main.all())
            m = slice(None) if every else np.flatnonzero(main)
            unique = not repeats or bool(first[m].all())
            qm = q if every else q[m]
            estimates = self._stateful(f, m, qm, received[m], seen_ts[m], unique, events, notes)
            if not every:
                q[m] = qm
        f.quality = q
        f.status = status_codes(q)
        f.notes = notes
        if estimates is not None:
            f = f.concat(estimates)
            if ordered:
                f = f.take(np.lexsort((f.ts, self.series.rank()[f.series])))
        return f, ([] if self._replaying else events)

    def _grouped(self, frame: ReadingFrame, ordered: bool) -> ReadingFrame:
        """The frame with the rows of each series together, in time order inside a series."""
        s = frame.series
        if ordered:
            return frame.take(np.lexsort((frame.ts, self.series.rank()[s])))
        # Polls arrive in the order their series were learnt, so ids usually rise: then every
        # series is there once, which is cheaper to see than by counting.
        if s.size < 2 or bool((s[1:] > s[:-1]).all()) or np.bincount(s, minlength=1).max() <= 1:
            return frame
        return frame.take(np.lexsort((frame.ts, s)))

    def _flag_clock(self, q: I64, s: I64, t: I64, received: I64) -> None:
        """Time tolerance, in place on `q`. The exact check (and its per-series gathers) runs on
        the rows whose lag is past the loosest threshold of any series: no other row can fail it.
        A reading without a receive time (a manual read, an import) has no clock to check."""
        lag = (received - t).astype(np.float64)
        loose = self._loosest
        maybe = np.flatnonzero(((lag > loose.stale_us) | (lag < loose.ahead_us)) & (received != NO_TS))
        if maybe.size:
            st = self._state.s
            ms = s[maybe]
            q[maybe] |= checks.clock(t[maybe], received[maybe], st["future_us"][ms], st["stale_us"][ms],
                                     st["skew_us"][ms])

    def _flag_gaps(self, q: I64, s: I64, t: I64, prev_t: I64) -> None:
        """Gap Check, in place on `q`, exact on the rows whose step is past the tightest gap limit
        of any series (the others cannot have a gap)."""
        maybe = np.flatnonzero((t - prev_t).astype(np.float64) > self._loosest.gap_us)
        if maybe.size:
            st = self._state.s
            ms = s[maybe]
            q[maybe] |= checks.gap(t[maybe], prev_t[maybe], st["interval_us"][ms], st["gap_tolerance"][ms])

    def _stateful(self, f: ReadingFrame, m: I64 | slice, q: I64, received: I64, seen_ts: I64, unique: bool,
                  events: list[Event], notes: dict[int, str]) -> ReadingFrame | None:
        """Checks that need each series' history, on the in-order new rows `m` of `f`: flags `q`
        (those rows' flags) in place, returns the estimates made."""
        st = self._state.s
        s, t, v = f.series[m], f.ts[m], f.value[m]
        if unique:
            first, prev_t = None, seen_ts
        else:
            first = group_firsts(s)
            prev_t = np.where(first, seen_ts, shifted(t, NO_TS))
        self._flag_gaps(q, s, t, prev_t)

        # Cumulative rows that can be references: not rejected.
        cum = f.cumulative[m] & ((q & int(REJECT)) == 0)
        c = np.flatnonzero(cum)
        estimates = None
        if c.size:
            rows = c if isinstance(m, slice) else m[c]  # their rows in f
            flags, estimates = self._cumulative(s[c], t[c], v[c], q[c], prev_t[c], rows, received[c], unique, notes)
            q[c] |= flags

        # Before the state moves on: which flags start here (it holds each series' last flags).
        at, started = self._flags_started(s, q, first)
        if unique:
            st["seen_ts"][s], st["seen_val"][s], st["seen_flags"][s] = t, v, q
        else:
            last = group_lasts(s)
            st["seen_ts"][s[last]] = t[last]
            st["seen_val"][s[last]] = v[last]
            st["seen_flags"][s[last]] = q[last]
        # Also while replaying history: it rebuilds the regression episodes (the events are dropped).
        self._events(s[at], t[at], v[at], started, events)
        return estimates

    def _flags_started(self, s: I64, q: I64, first: checks.B | None) -> tuple[I64, I64]:
        """Rows where a flag that raises an event starts on its series, and every flag that starts
        there. `first` is None when each series has one row: then only rows carrying such a flag
        can start one, and only their previous flags are looked up."""
        seen_flags = self._state.s["seen_flags"]
        if first is None:
            at = np.flatnonzero(q & RAISING)
            started = q[at] & ~seen_flags[s[at]]
            keep = (started & RAISING) != 0
            return at[keep], started[keep]
        before = np.where(first, seen_flags[s], shifted(q, 0))
        started = q & ~before
        at = np.flatnonzero(started & RAISING)
        return at, started[at]

    def _cumulative(self, s: I64, t: I64, v: F64, q: I64, prev_t: I64, rows: I64, received: I64, unique: bool,
                    notes: dict[int, str]) -> tuple[I64, ReadingFrame | None]:
        """Regression, rollover, spike, flatline, zero consumption and estimation of cumulative rows:
        their flags, and the estimates made."""
        state = self._state
        st = state.s
        ref_v0, ref_t0 = st["ref_val"][s], st["ref_ts"][s]  # the series' references before this batch
        ref, ref_t = ref_v0, ref_t0
        modulus, resolution = st["modulus"][s], st["resolution"][s]
        flags = checks.regression_and_rollover(v, ref, modulus, resolution)
        if not unique:
            first = group_firsts(s)
            ref = np.where(first, ref_v0, shifted(v, np.nan))
            ref_t = np.where(first, ref_t0, shifted(t, NO_TS))
            # A regressed read is not the reference of the next one: carry the last good read
            # forward until the flags stop changing (each pass settles one more row per series).
            while True:
                flags = checks.regression_and_rollover(v, ref, modulus, resolution)
                bad = (flags & REGRESSION) != 0
                if not bad.any():
                    break
                before = last_before(~bad, first)
                inside = before >= 0
                new_ref = np.where(inside, v[before], ref_v0)
                new_ref_t = np.where(inside, t[before], ref_t0)
                if np.array_equal(new_ref_t, ref_t) and np.array_equal(new_ref, ref, equal_nan=True):
                    break
                ref, ref_t = new_ref, new_ref_t
        good = (flags & REGRESSION) == 0
        has_ref = ref_t != NO_TS
        delta = checks.consumption(v, ref, modulus)
        dt = (t - ref_t).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(has_ref & (dt > 0), delta / (dt / US_PER_HOUR), np.nan)
        crow = state.cumulative_rows(s)
        self._flag_spikes(flags, s, t, rate, good, crow)

        # Flat runs over the good rows: when did the register last change?
        everyone = bool(good.all())
        g = slice(None) if everyone else np.flatnonzero(good)
        gs, gt, gcrow, ghas = s[g], t[g], crow[g], has_ref[g]
        changed = ~ghas | (np.abs(delta[g]) > resolution[g])
        state_start = st["run_start"][gs]
        if unique:
            gfirst = None
            run_start = np.where(changed, gt, state_start)
            moved = st["moved"][gs] | (changed & ghas)
        else:
            gfirst = group_firsts(gs)
            idx = np.arange(len(gs))
            anchor = np.where(changed, gt, state_start)
            run_start = anchor[np.maximum.accumulate(np.where(changed | gfirst, idx, 0))]
            moved = st["moved"][gs] | (last_before(changed & ghas, gfirst) >= 0) | (changed & ghas)
        flat_for = (gt - run_start).astype(np.float64)
        self._flag_unchanged(flags, g, np.flatnonzero(~changed), moved, flat_for, gs, gcrow)
        # A run that ended here: remember how long it lasted (the meter's usual).
        ended = (ref_t0[g] - state_start).astype(np.float64)
        if gfirst is not None:
            ended = np.where(gfirst, ended, shifted(flat_for, 0.0))
        done = changed & ghas & (ended > 0)
        if done.any():
            state.push_runs(gcrow[done], ended[done])

        # Learn from plain intervals: good, not a spike, no gap before them. The spike window
        # holds intervals with consumption only: for water or gas most intervals are zero, and
        # the question is whether this use is far beyond the meter's usual uses.
        plain = good & np.isfinite(rate) & ((flags & int(Quality.SPIKE)) == 0) & ((q & int(Quality.GAP)) == 0)
        p = np.flatnonzero(plain)
        mids = t[p] - (dt[p] / 2).astype(np.int64)
        state.add_profile(crow[p], checks.hour_of_week(mids), rate[p])
        p = p[rate[p] > 0]
        state.push_rates(crow[p], rate[p], t[p])
        state.refresh_stats(self._every)

        if unique:
            st["ref_ts"][gs], st["ref_val"][gs] = gt, v[g]
            st["run_start"][gs], st["moved"][gs] = run_start, moved
        else:
            glast = group_lasts(gs)
            st["ref_ts"][gs[glast]] = gt[glast]
            st["ref_val"][gs[glast]] = v[g][glast]
            st["run_start"][gs[glast]] = run_start[glast]
            st["moved"][gs[glast]] = moved[glast]

        for i in np.flatnonzero(flags & ROLLOVER).tolist():
            notes[int(rows[i])] = f"modulus={float(modulus[i])!r}"
        estimates = None
        if not self._replaying:
            estimates = self._estimate_gaps(s, t, v, q, flags, ref, ref_t, prev_t, good, received)
        return flags, estimates

    def _flag_spikes(self, flags: I64, s: I64, t: I64, rate: F64, good: checks.B, crow: I64) -> None:
        """Interval Spike Check, in place on `flags`, against statistics from before this batch, once
        the meter has enough intervals with consumption and a long enough history. Thresholds and
        statistics are gathered only for the rows that can be judged."""
        st, w = self._state.s, self._state.w
        count = w["count"][crow]
        e = np.flatnonzero(good & (count > 0) & (count >= self._loosest.spike_samples))
        if e.size == 0:
            return
        es, ec = s[e], crow[e]
        judged = (count[e] >= st["spike_min_samples"][es]) & ((t[e] - w["first_ts"][ec]) >= st["spike_min_us"][es]) & \
            np.isfinite(rate[e])
        e, es, ec = e[judged], es[judged], ec[judged]
        if e.size:
            flags[e] |= checks.spike(rate[e], np.ones(e.size, dtype=bool), w["center"][ec], w["spread"][ec],
                                     w["third"][ec], st["spike_k"][es], st["spike_peak"][es], st["spike_min_rate"][es])

    def _flag_unchanged(self, flags: I64, g: I64 | slice, k: I64, moved: checks.B, flat_for: F64, gs: I64,
                        gcrow: I64) -> None:
        """Repeated Value (FLATLINE) and Zero Consumption, in place on `flags`, for the rows `k` of
        the good rows `g` whose register did not change (no other row can have either)."""
        if k.size == 0:
            return
        st, w = self._state.s, self._state.w
        at = k if isinstance(g, slice) else g[k]  # rows of `flags`
        zero = flat_for[k] >= st["zero_us"][gs[k]]
        flags[at[zero]] |= int(Quality.ZERO_CONSUMPTION)
        # Only a register that moved before can be flat: the limit is worked out for those alone.
        k, at = k[moved[k]], at[moved[k]]
        ks = gs[k]
        limit_flat = np.maximum(st["flat_min_us"][ks], st["flat_factor"][ks] * w["usual_run"][gcrow[k]])
        flags[at[flat_for[k] > limit_flat]] |= int(Quality.FLATLINE)

    def _estimate_gaps(self, s: I64, t: I64, v: F64, q: I64, flags: I64, ref: F64, ref_t: I64, prev_t: I64,
                       good: checks.B, received: I64) -> ReadingFrame | None:
        """Fill gaps whose both ends are good real reads (the read before the gap is the reference).
        `q` holds the rows' flags from before, `flags` the cumulative checks' (never GAP)."""
        gaps = np.flatnonzero(q & int(Quality.GAP))
        if gaps.size == 0:
            return None
        st = self._state.s
        cs = s[gaps]
        ok = good[gaps] & (((q[gaps] | flags[gaps]) & int(SUSPECT | REJECT)) == 0) & \
            (ref_t[gaps] == prev_t[gaps]) & st["estimate"][cs] & \
            ((t[gaps] - ref_t[gaps]) <= st["estimate_max_us"][cs])
        made: list[tuple[int, Estimate, int]] = []
        for i in gaps[ok].tolist():
            sid = int(s[i])
            t0, t1 = int(ref_t[i]), int(t[i])
            linear_us = float(st["linear_us"][sid])
            # estimate_gap reads the profile only past the linear span: not worth averaging before.
            profile = self._state.profile(int(st["crow"][sid])) if t1 - t0 > linear_us else None
            est = estimate_gap(t0, float(ref[i]), t1, float(v[i]), interval_us=int(st["interval_us"][sid]),
                               modulus=float(st["modulus"][sid]), linear_us=linear_us, profile=profile)
            if est.ts.size:
                made.append((sid, est, int(received[i])))
        return _estimate_frame(made) if made else None

    def _events(self, s: I64, t: I64, v: F64, started: I64, events: list[Event]) -> None:
        """Anomaly events for the flags that start at these rows; inspections from regressions and tamper."""
        keys = self.series.keys
        for sid, ts_us, value, bits in zip(s.tolist(), t.tolist(), v.tolist(), started.tolist(), strict=True):
            meter_id, channel = keys[sid]
            for flag, name, why, severity in _ANOMALIES:
                if bits & flag:
                    events.append(Event(from_us(ts_us), meter_id, EventKind.ANOMALY, severity,
                                        f"{channel.value}: {name}: {why} (value {value:g})"))
            inspection = None
            if bits & REGRESSION:
                inspection = self._inspection.regression(meter_id, ts_us)
            if bits & TAMPER:
                inspection = inspection or self._inspection.tamper(meter_id, ts_us)
            if inspection is not None:
                events.append(inspection)


@dataclass(frozen=True, slots=True)
class _Loosest:
    """The loosest thresholds over every series. A row inside them cannot be flagged, so the
    exact per-series checks (and their per-row gathers) run only on the few rows outside them."""

    stale_us: float  # a lag (receive time - ts) above this may be STALE_TS
    ahead_us: float  # a lag below this may be FUTURE_TS or CLOCK_SKEW
    gap_us: float  # a step from the previous read above this may be a GAP
    spike_samples: float  # a window with fewer rates is never judged for spikes

    @classmethod
    def of(cls, s: Mapping[str, npt.NDArray[Any]], n: int) -> _Loosest:
        """From the per-series thresholds of series 0..n-1, computed as the checks compute them."""
        interval = s["interval_us"][:n]
        timed = interval > 0  # interval 0: not interval data, never a gap
        return cls(stale_us=_least(s["stale_us"][:n]),
                   ahead_us=-_least(np.fmin(s["future_us"][:n], s["skew_us"][:n])),
                   gap_us=_least(interval[timed] * (1.0 + s["gap_tolerance"][:n][timed])),
                   spike_samples=_least(s["spike_min_samples"][:n].astype(np.float64)))


#: Before any series: every row is worth the exact checks.
_EVERY_ROW = _Loosest(stale_us=-np.inf, ahead_us=np.inf, gap_us=-np.inf, spike_samples=-np.inf)


def _least(values: F64) -> float:
    """The smallest value; NaN thresholds (which flag nothing) are ignored; +inf if there is none."""
    return float(np.fmin.reduce(values, initial=np.inf))


def _drop_exact_repeats(f: ReadingFrame, first: checks.B) -> tuple[ReadingFrame, checks.B, checks.B]:
    """Exact repeats of a row inside the batch are dropped; the rest of a repeated key conflicts.
    Returns the frame, its group starts, and the rows repeating the key (series, ts) of the row before."""
    same = ~first & (f.ts == shifted(f.ts, NO_TS))
    if same.any():
        key_first = np.maximum.accumulate(np.where(same, 0, np.arange(len(f))))
        v0 = f.value[key_first]
        exact = same & ((f.value == v0) | (np.isnan(f.value) & np.isnan(v0)))
        if exact.any():
            f = f.take(~exact)
            first = group_firsts(f.series)
            same = ~first & (f.ts == shifted(f.ts, NO_TS))
    return f, first, same


def _name(flag: Quality) -> str:
    return (flag.name or str(int(flag))).lower()


#: (bit, name, why, severity) of each flag that raises an anomaly event, in the order they are raised.
_ANOMALIES = tuple((int(flag), _name(flag), why, Severity.INFO if flag is Quality.CLOCK_SKEW else Severity.WARNING)
                   for flag, why in _WHY.items())


def _estimate_frame(made: list[tuple[int, Estimate, int]]) -> ReadingFrame:
    """One frame of new rows for the estimates of several gaps: (series id, estimate, received µs)."""
    sizes = [est.ts.size for _, est, _ in made]
    k = sum(sizes)
    frame = ReadingFrame.build(np.repeat(np.array([sid for sid, _, _ in made], dtype=np.int64), sizes),
                               np.concatenate([est.ts for _, est, _ in made]),
                               np.concatenate([est.values for _, est, _ in made]), np.ones(k, bool),
                               quality=np.full(k, int(Quality.ESTIMATED), np.int64),
                               received=np.repeat(np.array([rec for _, _, rec in made], dtype=np.int64), sizes),
                               source=Source.ESTIMATE, status=Status.ESTIMATED)
    offset = 0
    for (_, est, _), size in zip(made, sizes, strict=True):
        frame.notes.update(dict.fromkeys(range(offset, offset + size), est.note))
        offset += size
    return frame


__all__ = ["REJECT", "SUSPECT", "Validator", "status_for"]
