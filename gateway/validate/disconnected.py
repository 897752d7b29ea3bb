"""Usage while disconnected (issue 24 item 3): a cumulative register that advances while the meter's
relay is known to be open is the classic bypass (CIM 3.6.2 "usage on inactive meter"; Oracle's
"Inactive Measurement Check"). Such reads are flagged USAGE_WHILE_DISCONNECTED (suspect) and the
meter raises one `tamper` event (severity critical) per episode.

The relay is known open:
- from the meter's own status word: the reading carries RELAY_OPEN (a profile's `relay_open` flag,
  as a DLMS disconnect control's output_state would be);
- from the PAYG balance updates: `relay = disconnected` from its timestamp until one says
  `connected` (the update of a disconnect command that completed is one of those);
- for a meter whose registry status is `inactive`: always.

An episode's baseline is the first read with the relay open (the meter may still have been
counting what it measured before it opened); from then on, an advance of more than
`disconnected_resolutions` register steps (default 1: a read in flight) flags the read. A read
with the relay closed ends the episode, so does a `connected` balance update.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import numpy as np

from gateway.model import BalanceUpdate, Channel, Event, EventKind, Quality, Relay, Severity
from gateway.model.frame import NO_TS, SeriesTable, from_us, to_us
from gateway.validate.checks import F64, I64, B, group_firsts, group_lasts, group_start_index, shifted
from gateway.validate.status import REJECT
from gateway.validate.thresholds import Thresholds

USAGE = int(Quality.USAGE_WHILE_DISCONNECTED)
RELAY_OPEN = int(Quality.RELAY_OPEN)
_LEFT_OUT = int(REJECT | Quality.REGRESSION | Quality.DUPLICATE_CONFLICT | Quality.ESTIMATED)
CLOSED = np.iinfo(np.int64).max  # "open since" of a meter whose relay is not known open
_WHY = {"flag": "the meter reports its relay open", "payg": "its PAYG balance reports the relay disconnected",
        "inactive": "the meter is inactive in the registry"}


class DisconnectedUsage:
    """Stateful over batches: relay knowledge per meter, the episode's baseline per series."""

    def __init__(self, series: SeriesTable, thresholds: Callable[[str, Channel], Thresholds],
                 inactive: Collection[str] = ()) -> None:
        self._series = series
        self._thresholds = thresholds
        self._inactive = frozenset(inactive)
        self._known = 0
        self._meter_ids: dict[str, int] = {}
        self._since = np.empty(0, np.int64)  # per meter: relay open since (µs), CLOSED if not known open
        self._why: list[str] = []  # per meter: how it is known open
        self._reported: set[int] = set()  # meters whose current episode raised its event
        self._meter = np.empty(0, np.int64)  # per series
        self._base = np.empty(0, np.float64)  # per series: the episode's first read, NaN outside one
        self._limit = np.empty(0, np.float64)  # per series: the advance beyond which a read is flagged

    def _meter_index(self, meter_id: str) -> int:
        m = self._meter_ids.get(meter_id)
        if m is None:
            m = self._meter_ids[meter_id] = len(self._why)
            inactive = meter_id in self._inactive
            self._since = np.append(self._since, NO_TS if inactive else CLOSED)
            self._why.append("inactive" if inactive else "")
        return m

    def _sync(self) -> None:
        n = len(self._series)
        if n == self._known:
            return
        keys = self._series.keys[self._known:n]
        meters = [self._meter_index(m) for m, _ in keys]
        limits = []
        for meter_id, channel in keys:
            t = self._thresholds(meter_id, channel)
            limits.append((t.disconnected_resolutions + 0.5) * t.resolution)  # half a step: float noise
        self._meter = np.concatenate([self._meter, np.asarray(meters, np.int64)])
        self._base = np.concatenate([self._base, np.full(len(keys), np.nan)])
        self._limit = np.concatenate([self._limit, np.asarray(limits, np.float64)])
        self._known = n

    def relay(self, updates: Iterable[BalanceUpdate]) -> None:
        """What PAYG balance updates say of their meters' relays, in time order."""
        for u in sorted((u for u in updates if u.relay is not None), key=lambda u: u.ts):
            m = self._meter_index(u.meter_id)
            if self._why[m] == "inactive":
                continue
            if u.relay is Relay.DISCONNECTED:
                if self._since[m] == CLOSED:
                    self._since[m], self._why[m] = to_us(u.ts), "payg"
            elif self._since[m] != CLOSED:
                self._end(m)

    def _end(self, m: int) -> None:
        self._since[m], self._why[m] = CLOSED, ""
        self._reported.discard(m)
        if self._meter.size:
            self._base[self._meter == m] = np.nan

    def watching(self) -> bool:
        """Whether any meter is known open or inside an episode: if not, only rows flagged RELAY_OPEN
        can start one, and a batch without any has nothing to judge (the usual batch)."""
        self._sync()
        return bool((self._since != CLOSED).any() or np.isfinite(self._base).any())

    def check(self, s: I64, t: I64, v: F64, q: I64, cumulative: B) -> tuple[I64, list[Event]]:
        """USAGE_WHILE_DISCONNECTED bits per row and the tamper events of episodes that start."""
        flags = np.zeros(s.size, np.int64)
        device = (q & RELAY_OPEN) != 0
        if not self.watching() and not device.any():
            return flags, []
        # Only series of meters known open or inside an episode, and series with a row the device says
        # open, can be judged; the rest of the batch (most of it) is not sorted.
        watched = (self._since[self._meter] != CLOSED) | np.isfinite(self._base)
        watched[s[device]] = True  # every row of those series: a closed read between two open ones ends a run
        rows = np.flatnonzero(cumulative & ((q & _LEFT_OUT) == 0) & watched[s])
        if rows.size == 0:
            return flags, []
        rows = rows[np.lexsort((t[rows], s[rows]))]
        rs, rt, rv = s[rows], t[rows], v[rows]
        meter = self._meter[rs]
        device = device[rows]
        opened = device | (rt >= self._since[meter])
        first = group_firsts(rs)
        before: B = shifted(opened, False)  # type: ignore[assignment]
        run_start = opened & (first | ~before)
        idx = np.arange(rows.size)
        start = np.maximum.accumulate(np.where(run_start, idx, 0))
        continues = opened & (start == group_start_index(first)) & np.isfinite(self._base[rs])
        base = np.where(continues, self._base[rs], rv[start])
        advance = rv - base
        used = opened & (advance > self._limit[rs])
        flags[rows[used]] = USAGE
        events: list[Event] = []
        for i in np.flatnonzero(used).tolist():
            m = int(meter[i])
            if m in self._reported:
                continue
            self._reported.add(m)
            meter_id, channel = self._series.keys[int(rs[i])]
            why = self._why[m] if not device[i] else "flag"
            events.append(Event(from_us(int(rt[i])), meter_id, EventKind.TAMPER, Severity.CRITICAL,
                                f"{channel.value}: usage_while_disconnected: the register advanced "
                                f"{float(advance[i]):.6g} from {float(base[i]):.6g} to {float(rv[i]):.6g} while {_WHY.get(why, why)}"))
        last = group_lasts(rs)
        self._base[rs[last]] = np.where(opened[last], base[last], np.nan)
        for m in set(meter[last & ~opened].tolist()):
            if self._since[m] == CLOSED:  # the device says closed and nothing else says open
                self._reported.discard(m)
        return flags, events


__all__ = ["DisconnectedUsage"]
