"""Backfill from meter memory (issue 17 item 4): after a gap, the missing intervals are read from the
meter's load profile and emitted as readings at their own capture times, before the poll that ends
the gap - so VEE, which estimates a gap only once a real read closes it, finds the intervals real.

Where a gap starts: the timestamp of the meter's last reading, from the store at start (`Since`:
the gateway was down) and then from this driver's own polls (comm lost, then restored). The first
good poll after it reads the profile rows strictly between the two (a `margin` either side, so the
row at a poll's own slot is not a second reading of it), oldest first, at most `max_window` back.

Pacing: the rows are read `chunk` at a time, one association per chunk through the poller's
`read_profile`, which holds the endpoint's bus lock only for that chunk; between chunks the lock is
free (and `pause` seconds pass), so the schedule's polls of the other meters get their turn.

A backfill that fails (link, timeout, bad frame, anything else) is logged and counted, never the poll's failure:
the poll's own reading still goes on, and VEE estimates what the meter's memory did not give.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from drivers.dlms.reads import ProfileRows
from gateway.model import Quality
from gateway.model.samples import RawObjects, Sample

log = logging.getLogger(__name__)

#: The profile status byte (IDIS / DSMR "AMR profile status", 0-0:96.10.1) -> quality flag.
#: 0x80 PDN power down, 0x20 CAD clock adjusted: IDIS bits 7 and 5. 0x10 tamper: the bit our
#: simulator (simulators/dlms/model.py STATUS_TAMPER) and the meters' event filters use for a
#: fraud/tamper event in the interval (IDIS leaves bit 4 to the manufacturer). The other bits
#: (0x01 critical error, 0x02 clock invalid, 0x04 data not valid, 0x08 daylight saving) are not
#: mapped: they are no flag of SPEC §3 and are not read as one.
STATUS_FLAGS: tuple[tuple[int, Quality], ...] = (
    (0x80, Quality.POWER_FAIL),
    (0x20, Quality.CLOCK_ADJUSTED),
    (0x10, Quality.TAMPER),
)

LOAD_PROFILE = "1-0:99.1.0"
Emit = Callable[[Sample], Awaitable[None]]
#: The timestamp of a meter's newest stored reading (None: none yet), asked once per meter at start.
Since = Callable[[str], Awaitable[datetime | None]]


class ProfileSource(Protocol):
    """What the backfill needs of the poller: a profile read by range, one association, bus lock held."""

    async def read_profile(self, meter_id: str, code: str, start: datetime, end: datetime) -> ProfileRows: ...


def quality_of(status: int | None) -> Quality:
    """The quality flags a profile row's status byte carries (STATUS_FLAGS)."""
    q = Quality.NONE
    if status:
        for bit, flag in STATUS_FLAGS:
            if status & bit:
                q |= flag
    return q


@dataclass(frozen=True, slots=True)
class BackfillPolicy:
    max_window: timedelta = timedelta(days=7)  # never reach back further (VEE's stale_ts is 168 h)
    chunk: timedelta = timedelta(hours=6)  # profile time read per association (24 rows of 15 min)
    pause: float = 0.0  # s between chunks, the bus lock free
    min_gap: timedelta = timedelta(minutes=15)  # a shorter gap holds no profile row: not read
    margin: timedelta = timedelta(seconds=60)  # rows this close to the gap's ends are those reads
    profile: str = LOAD_PROFILE
    profiles: dict[str, str] = field(default_factory=dict)  # meter id -> its profile's OBIS, if other


@dataclass(slots=True)
class BackfillCounts:
    runs: int = 0
    rows: int = 0
    failures: int = 0
    last_error: str | None = None


class Backfill:
    """Per endpoint: remembers each meter's last reading time and fills the gap before a poll's read."""

    def __init__(self, policy: BackfillPolicy, emit: Emit, clock: Callable[[], datetime],
                 since: Since | None = None) -> None:
        self.policy = policy
        self._emit = emit
        self._clock = clock
        self._since = since
        self._last: dict[str, datetime] = {}
        self.counts: dict[str, BackfillCounts] = {}

    async def start(self, meter_id: str) -> None:
        """Learn where the meter's data stopped (the store's newest reading) before its first poll."""
        if self._since is None or meter_id in self._last:
            return
        try:
            last = await self._since(meter_id)
        except Exception as exc:  # a store that does not answer: no backfill at start, polls go on
            log.warning("meter %s: last reading time not known (%s): no backfill at start", meter_id, exc,
                        extra={"meter_id": meter_id})
            return
        if last is not None:
            self._last[meter_id] = last

    async def before(self, source: ProfileSource, raw: RawObjects) -> int:
        """Called with a poll's reading before it is emitted: emit the profile rows of the gap since the
        meter's last reading; returns how many."""
        last = self._last.get(raw.meter_id)
        self._last[raw.meter_id] = raw.ts
        if last is None or raw.ts - last < self.policy.min_gap:
            return 0
        return await self.fill(source, raw.meter_id, last, raw.ts)

    async def fill(self, source: ProfileSource, meter_id: str, since: datetime, until: datetime) -> int:
        """Emit the rows captured strictly between `since` and `until` (margins off), oldest first."""
        p = self.policy
        counts = self.counts.setdefault(meter_id, BackfillCounts())
        counts.runs += 1
        low = max(since + p.margin, until - p.max_window)
        high = until - p.margin
        code = p.profiles.get(meter_id, p.profile)
        emitted = 0
        newest = low
        start = low
        while start < high:
            end = min(start + p.chunk, high)
            try:
                rows = await source.read_profile(meter_id, code, start, end)
            except Exception as err:  # DriverError, or a case none covers: this backfill's end, not the fleet's
                counts.failures += 1
                counts.last_error = str(err)
                log.warning("meter %s: backfill of %s from %s stopped: %s", meter_id, code, start.isoformat(), err,
                            extra={"meter_id": meter_id})
                break
            for at, status, values in rows.rows:
                if not newest < at < high:  # ranges are inclusive: a row on a chunk's edge comes once
                    continue
                newest = at
                await self._emit(RawObjects(meter_id, at, self._clock(),
                                            tuple((v.code, v.value, v.unit) for v in values),
                                            quality=quality_of(status)))
                emitted += 1
            start = end
            await asyncio.sleep(p.pause)  # the bus lock is free here: the schedule goes first
        counts.rows += emitted
        return emitted


__all__ = ["LOAD_PROFILE", "STATUS_FLAGS", "Backfill", "BackfillCounts", "BackfillPolicy", "ProfileSource", "Since",
           "quality_of"]
