"""inspection_recommended: a meter that keeps running backwards, or reports tamper, needs a visit.

The account system turns the event into a service order for a meter inspection. Rule
(domain notes §3.3, our proposal): `inspection_regressions` regression episodes within
`inspection_days`, or any tamper. An episode is one poll at which any cumulative channel of
the meter started to regress (the same poll on two channels counts once). After a
recommendation the meter is quiet for `inspection_days`, so one problem makes one order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.model import Event, EventKind, Severity

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_DAY = 86_400_000_000

#: meter_id -> (regression episodes that trigger, window in days)
Policy = Callable[[str], tuple[int, float]]


class InspectionTracker:
    """Counts regression episodes per meter in a sliding window; raises the event once per window."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._episodes: dict[str, deque[int]] = {}
        self._last: dict[str, int] = {}  # µs of the last recommendation per meter

    def regression(self, meter_id: str, ts_us: int) -> Event | None:
        needed, days = self._policy(meter_id)
        window = int(days * US_PER_DAY)
        episodes = self._episodes.setdefault(meter_id, deque())
        if episodes and episodes[-1] == ts_us:
            return None  # another channel of the same poll
        episodes.append(ts_us)
        while episodes and episodes[0] <= ts_us - window:
            episodes.popleft()
        if len(episodes) >= needed:
            return self._recommend(meter_id, ts_us, window,
                                   f"{len(episodes)} regressions of its register within {days:g} days")
        return None

    def tamper(self, meter_id: str, ts_us: int) -> Event | None:
        _, days = self._policy(meter_id)
        return self._recommend(meter_id, ts_us, int(days * US_PER_DAY), "the meter reports tamper")

    def _recommend(self, meter_id: str, ts_us: int, window: int, why: str) -> Event | None:
        last = self._last.get(meter_id)
        if last is not None and ts_us - last < window:
            return None
        self._last[meter_id] = ts_us
        self._episodes.pop(meter_id, None)
        ts = _EPOCH + timedelta(microseconds=ts_us)
        return Event(ts, meter_id, EventKind.INSPECTION_RECOMMENDED, Severity.WARNING,
                     f"meter {meter_id}: inspection recommended: {why}")

    def seed(self, meter_id: str, ts_us: int) -> None:
        """A recommendation already made (e.g. read back from the store after a restart)."""
        last = self._last.get(meter_id)
        if last is None or ts_us > last:
            self._last[meter_id] = ts_us


__all__ = ["InspectionTracker", "Policy"]
