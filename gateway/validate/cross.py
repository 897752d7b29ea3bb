"""Checks across series (issue 24): after the Validator judged each series on its own, the rows of one
meter are judged together: the TOU sum check (tou.py) and usage while disconnected (disconnected.py);
and a water or gas meter's leak (leak.py).
Their flags join the rows' quality and the status follows (status.py); their events join the batch's.

The pipeline runs `check_frame` on each validated frame and `relay` on each batch's balance updates
before its readings, so a disconnect reported in the same batch already counts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from gateway.model import BalanceUpdate, Channel, Event, Quality, Reading
from gateway.model.frame import ReadingFrame
from gateway.validate.disconnected import DisconnectedUsage
from gateway.validate.leak import LeakCheck
from gateway.validate.status import status_codes
from gateway.validate.tou import TouSumCheck
from gateway.validate.validator import Validator

RELAY_OPEN = Quality.RELAY_OPEN


class CrossChecks:
    """The checks across one meter's series, sharing the Validator's series ids and thresholds."""

    def __init__(self, validator: Validator, *, inactive: Collection[str] = ()) -> None:
        self.series = validator.series
        self.tou = TouSumCheck(validator.series, validator.thresholds)
        self.disconnected = DisconnectedUsage(validator.series, validator.thresholds, inactive)
        self.leak = LeakCheck(validator.series, validator.thresholds)

    def relay(self, updates: Iterable[BalanceUpdate]) -> None:
        self.disconnected.relay(updates)

    def check_frame(self, frame: ReadingFrame) -> list[Event]:
        """Flag the frame in place (quality and status); the events raised."""
        if len(frame) == 0:
            return []
        s, t, v, q = frame.series, frame.ts, frame.value, frame.quality
        tou, events = self.tou.check(s, t, v, q)
        used, tampers = self.disconnected.check(s, t, v, q, frame.cumulative)
        leaks = self.leak.check(s, t, v, q)
        flags = tou | used
        hit = flags != 0
        if hit.any():
            frame.quality = q | flags
            status = frame.status.copy()
            status[hit] = status_codes(frame.quality[hit])
            frame.status = status
        return events + tampers + leaks

    def check(self, readings: Sequence[Reading]) -> tuple[list[Reading], list[Event]]:
        """`check_frame` for readings made one by one (coded values)."""
        if not readings:
            return [], []
        # Usually nothing to judge: the readings go on as they are, without a frame made for them.
        if (self.tou.idle() and not self.disconnected.watching() and not any(r.quality & RELAY_OPEN for r in readings)
                and not any(r.channel is Channel.VOLUME for r in readings)):
            return list(readings), []
        frame = ReadingFrame.from_readings(readings, self.series)
        events = self.check_frame(frame)
        return frame.to_readings(self.series), events


__all__ = ["CrossChecks"]
