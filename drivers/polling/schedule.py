"""When a meter is polled: interval boundaries, a per-meter send offset, overruns skipped.

Pure: times are plain epoch seconds handed in by the caller, so tests move a fake clock
instead of waiting.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

#: Without a configured jitter, sends are spread over this fraction of the interval, at most
#: _MAX_SPREAD seconds: enough to keep a thousand meters from asking at the same instant,
#: small enough that a 15-minute read still happens right after its boundary.
_SPREAD = 0.1
_MAX_SPREAD = 5.0


def send_offset(meter_id: str, interval: float, jitter: float | None = None) -> float:
    """Deterministic per-meter delay after the boundary, in [0, window).

    The window is `jitter` seconds (capped at the interval), by default 10 % of the interval
    and at most 5 s. Derived from the meter id, so a restart keeps each meter's slot.
    """
    return send_window(interval, jitter) * (zlib.crc32(meter_id.encode()) / 2**32)


def send_window(interval: float, jitter: float | None = None) -> float:
    """The seconds after a boundary over which meters spread their sends (see `send_offset`)."""
    return min(interval * _SPREAD, _MAX_SPREAD) if jitter is None else min(jitter, interval)


@dataclass(frozen=True, slots=True)
class Slot:
    """One poll: the boundary it belongs to (`due`) and when to send it (`send_at`)."""

    due: float
    send_at: float


class Schedule:
    """The boundaries of one meter: `epoch + k * interval`.

    Aligned schedules use epoch 0, so a 900 s interval polls at :00, :15, :30, :45 (plus the
    meter's offset) and stamps readings with the boundary. Unaligned ones start from the
    first call. An interval of 0 polls back to back. A poll still running when the next
    slot's send time passes has overrun: the slots it covered are skipped and counted by
    `finished`, never queued up.
    """

    def __init__(self, interval: float, *, align: bool = True, offset: float = 0.0) -> None:
        if interval < 0 or offset < 0 or (interval and offset >= interval):
            msg = f"schedule: need interval >= 0 and 0 <= offset < interval, got {interval}, {offset}"
            raise ValueError(msg)
        self.interval = interval
        self.align = align
        self.offset = offset
        self._epoch: float | None = 0.0 if align else None
        self._k: int | None = None  # index of the next boundary

    def next(self, now: float) -> Slot:
        """The next slot to poll, given the time now."""
        if not self.interval:
            return Slot(now, now)
        if self._epoch is None:
            self._epoch = now - self.offset  # unaligned: the first send is now
        if self._k is None:
            self._k = math.ceil((now - self.offset - self._epoch) / self.interval - 1e-9)
        due = self._epoch + self._k * self.interval
        if due + self.offset - now > 2 * self.interval:  # the wall clock went back: find our place again
            self._k = math.ceil((now - self.offset - self._epoch) / self.interval - 1e-9)
            due = self._epoch + self._k * self.interval
        return Slot(due, due + self.offset)

    def finished(self, slot: Slot, now: float) -> int:
        """Record that the poll of `slot` ended at `now`; return how many slots it overran."""
        if not self.interval:
            return 0
        assert self._epoch is not None
        # Slots whose send time passed while this poll ran are skipped.
        missed = max(0, math.floor((now - slot.send_at) / self.interval))
        self._k = round((slot.due - self._epoch) / self.interval) + 1 + missed
        return missed
