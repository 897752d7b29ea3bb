"""Leak (issue 18 item 7): a water or gas meter whose volume register advances at every read for a
day is not a household's use, which has quiet hours every night; it is a running tap, a cistern, a
pipe. It raises one `leak_suspected` event per run (the readings stay valid: the volume is real and
billable). A read with no advance (within half a register step) ends the run; so does a step between
two reads longer than `leak_max_step_hours`, across which a steady flow cannot be told from a burst.

Only volume series are looked at, few and slow (15-minute or hourly reads), so this walks their rows
of a batch in Python; every other series costs one array lookup.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.model import Channel, Event, EventKind, Quality, Severity
from gateway.model.frame import SeriesTable, from_us
from gateway.validate.checks import F64, I64
from gateway.validate.status import REJECT
from gateway.validate.thresholds import Thresholds

_LEFT_OUT = int(REJECT | Quality.REGRESSION | Quality.DUPLICATE_CONFLICT | Quality.ESTIMATED)
_HOUR_US = 3_600_000_000


class LeakCheck:
    """Stateful over batches: per volume series, its last read and since when it has flowed."""

    def __init__(self, series: SeriesTable, thresholds: Callable[[str, Channel], Thresholds]) -> None:
        self._series = series
        self._thresholds = thresholds
        self._known = 0
        self._watched = np.zeros(0, bool)  # per series: a volume series with the check on
        self._state: dict[int, list[float]] = {}  # series -> [last ts, last value, flowing since (or -1), reported]
        self._rule: dict[int, tuple[float, int, int]] = {}  # series -> (half a step, leak µs, max step µs)

    def _sync(self) -> None:
        n = len(self._series)
        if n == self._known:
            return
        watched = np.zeros(n, bool)
        watched[: self._known] = self._watched
        for i, (meter_id, channel) in enumerate(self._series.keys[self._known:n], start=self._known):
            if channel is not Channel.VOLUME:
                continue
            t = self._thresholds(meter_id, channel)
            if t.leak_hours is None:
                continue
            watched[i] = True
            self._rule[i] = (0.5 * t.resolution, int(t.leak_hours * _HOUR_US), int(t.leak_max_step_hours * _HOUR_US))
        self._watched = watched
        self._known = n

    def check(self, s: I64, t: I64, v: F64, q: I64) -> list[Event]:
        """The events of this batch (rows may come in any order; each series' rows are taken by time)."""
        self._sync()
        rows = np.flatnonzero(self._watched[s] & ((q & _LEFT_OUT) == 0))
        if len(rows) == 0:
            return []
        rows = rows[np.lexsort((t[rows], s[rows]))]
        events = []
        for r in rows.tolist():
            sid, ts, value = int(s[r]), int(t[r]), float(v[r])
            half, leak_us, max_step = self._rule[sid]
            state = self._state.get(sid)
            if state is None:
                self._state[sid] = [ts, value, -1.0, 0.0]
                continue
            last_ts, last_value, since, reported = state
            if ts <= last_ts:
                continue
            if ts - last_ts > max_step or value - last_value <= half:
                since, reported = -1.0, 0.0
            else:
                since = last_ts if since < 0 else since
                if ts - since >= leak_us and not reported:
                    reported = 1.0
                    meter_id, _ = self._series.keys[sid]
                    hours = (ts - since) / _HOUR_US
                    events.append(Event(from_us(ts), meter_id, EventKind.LEAK_SUSPECTED, Severity.WARNING, (
                        f"volume: leak suspected: the register advanced at every read for {hours:.1f} h since "
                        f"{from_us(int(since)).isoformat()} (no quiet read; rule [vee] leak_hours)")))
            self._state[sid] = [ts, value, since, reported]
        return events


__all__ = ["LeakCheck"]
