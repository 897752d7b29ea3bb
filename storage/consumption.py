"""Consumption from cumulative registers: bucket boundaries and the arithmetic both stores share.

Pure: no I/O, no clock. A store finds, for every bucket boundary, the last usable read at
or before it (an index probe each), and the few flagged reads of the range (a partial
index); everything else is here, so both backends give the same answer.

The rules (documented for the account system):

* A bucket [start, end) is opened by the last read at or before `start` and closed by the
  last read at or before `end`. A read exactly on a boundary closes one bucket and opens
  the next, so the buckets of a range add up to the consumption of the whole range.
* Across a gap nothing is invented: the consumption of the missing time lands in the
  bucket where reads resume, and that bucket is marked `gap` when the resuming read
  carries the GAP flag. A bucket with no read inside it has no value (None).
* A read flagged ROLLOVER carries `modulus=<float>` in its note: the register wrapped
  once between the previous read and this one, so the modulus is added back.
* Estimated reads (status estimated, source estimate or the ESTIMATED flag) make the
  bucket `estimated`; suspect or rejected reads inside it, a rollover without a modulus,
  or a negative result make it `suspect`. Rejected reads never open or close a bucket.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import InvalidRequest
from gateway.model import Channel, Quality, Reading, Source, Status
from gateway.model.readings import CUMULATIVE_CHANNELS, flag_names
from storage.base import BillingRead, ConsumptionBucket

BUCKETS = ("hour", "day", "month")
#: More buckets than this in one call is a mistake (or an attack), not a report.
MAX_BUCKETS = 10_000

#: Reads the flagged-reads index holds: anything but a plain valid real read. Stores put
#: exactly this predicate on their partial index and in the query, so the index is used.
FLAGGED_SQL = "(quality <> 0 OR status <> 'valid' OR source = 'estimate')"

_MODULUS = re.compile(r"\bmodulus=([0-9][0-9.eE+\-]*)")
_SUSPECT = frozenset({Status.SUSPECT, Status.REJECTED})
#: Status of reads a bill may start or end on.
BILLABLE = (Status.VALID, Status.VERIFIED, Status.ESTIMATED)
#: Statuses of reads that may open or close a consumption bucket.
USABLE = tuple(s for s in Status if s is not Status.REJECTED)


def modulus_of(reading: Reading) -> float | None:
    """The rollover modulus recorded in the note of a ROLLOVER read, or None."""
    if reading.note is None:
        return None
    match = _MODULUS.search(reading.note)
    if match is None:
        return None
    try:
        value = float(match[1])
    except ValueError:
        return None
    return value if value > 0 else None


def is_estimated(r: Reading) -> bool:
    return r.status is Status.ESTIMATED or r.source is Source.ESTIMATE or bool(r.quality & Quality.ESTIMATED)


def check_request(channel: Channel, bucket: str, tz: str) -> ZoneInfo:
    """The zone of a consumption request, or InvalidRequest saying what is wrong."""
    if bucket not in BUCKETS:
        msg = f"consumption: bucket {bucket!r} is not one of {', '.join(BUCKETS)}"
        raise InvalidRequest(msg)
    if channel not in CUMULATIVE_CHANNELS:
        names = ", ".join(sorted(c.value for c in CUMULATIVE_CHANNELS))
        msg = f"consumption: channel {channel.value!r} is not a cumulative register (use one of {names})"
        raise InvalidRequest(msg)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"consumption: unknown time zone {tz!r}"
        raise InvalidRequest(msg) from exc


def _floor(t: datetime, bucket: str, zone: ZoneInfo) -> datetime:
    local = t.astimezone(zone)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if bucket == "month":
        day = day.replace(day=1)
    # Re-attach the zone to the wall-clock midnight: its offset may differ from t's (DST).
    return day.replace(tzinfo=zone).astimezone(UTC)


def _next(b: datetime, bucket: str, zone: ZoneInfo) -> datetime:
    if bucket == "hour":
        # Step in UTC: a local hour repeated or skipped by DST is still one real hour.
        return b + timedelta(hours=1)
    local = b.astimezone(zone).replace(tzinfo=None)
    if bucket == "day":
        nxt = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        nxt = (local.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return nxt.replace(tzinfo=zone).astimezone(UTC)


def bucket_bounds(start: datetime, end: datetime, bucket: str, zone: ZoneInfo) -> list[datetime]:
    """Boundaries (UTC) of the buckets covering [start, end): b0 <= start < ... < bn >= end."""
    start, end = _aware(start), _aware(end)
    if end <= start:
        msg = f"consumption: end {end.isoformat()} is not after start {start.isoformat()}"
        raise InvalidRequest(msg)
    bounds = [_floor(start, bucket, zone)]
    while bounds[-1] < end:
        bounds.append(_next(bounds[-1], bucket, zone))
        if len(bounds) > MAX_BUCKETS + 1:
            msg = f"consumption: more than {MAX_BUCKETS} {bucket} buckets from {start.isoformat()} to {end.isoformat()}"
            raise InvalidRequest(msg)
    return bounds


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


@dataclass(frozen=True, slots=True)
class Measure:
    value: float | None
    estimated: bool
    suspect: bool
    gap: bool
    flags: list[str]


def _within(flagged: Sequence[Reading], times: Sequence[datetime], lo: datetime | None,
            hi: datetime | None) -> Sequence[Reading]:  # fmt: skip
    """The reads of `flagged` (sorted by ts; `times` their ts) with lo < ts <= hi."""
    if lo is None or hi is None:
        return ()
    return flagged[bisect_right(times, lo):bisect_right(times, hi)]


def measure(opening: Reading | None, closing: Reading | None, flagged: Sequence[Reading],
            *, inside: tuple[datetime, datetime] | None = None, times: Sequence[datetime] | None = None,
            with_flags: bool = True) -> Measure:  # fmt: skip
    """Consumption from `opening` to `closing` using the flagged reads between them.

    `flagged` are the reads of the range that carry a flag or a non-valid status, sorted by
    ts (any superset of (opening.ts, closing.ts] is fine); `times` their timestamps, when the
    caller measures many buckets over the same reads. `inside` is the bucket (start, end]:
    suspect or rejected reads there mark the bucket suspect even where they were not used; a
    bucket whose closing read is not inside it has no value. `with_flags=False` leaves
    `flags` empty (buckets do not report them).
    """
    if times is None:
        times = [r.ts for r in flagged]
    lo = opening.ts if opening is not None else (inside[0] if inside else None)
    hi = closing.ts if closing is not None else (inside[1] if inside else None)
    between = _within(flagged, times, lo, hi)
    suspect = any(r.status in _SUSPECT for r in between)
    if inside is not None and not suspect:
        suspect = any(r.status in _SUSPECT for r in _within(flagged, times, *inside))
    used = [r for r in between if r.status is not Status.REJECTED]
    ends = [r for r in (opening, closing) if r is not None]
    estimated = any(is_estimated(r) for r in ends) or any(is_estimated(r) for r in used)
    gap = any(r.quality & Quality.GAP for r in used)
    flags = sorted({name for r in [*ends, *used] for name in flag_names(r.quality)}) if with_flags else []
    if opening is None or closing is None or (inside is not None and closing.ts <= inside[0]):
        return Measure(None, estimated, suspect, gap, flags)
    value = closing.value - opening.value
    for r in used:
        if r.quality & Quality.ROLLOVER:
            modulus = modulus_of(r)
            if modulus is None:
                suspect = True  # the wrap cannot be counted: the value is wrong by a modulus
            else:
                value += modulus
    if value < 0:
        suspect = True
    return Measure(value, estimated, suspect or any(r.status in _SUSPECT for r in ends), gap, flags)


def buckets(bounds: Sequence[datetime], closings: Sequence[Reading | None],
            flagged: Sequence[Reading]) -> list[ConsumptionBucket]:  # fmt: skip
    """Buckets between consecutive `bounds`; `closings[i]` is the last usable read at or
    before `bounds[i]` (so it opens bucket i and closes bucket i-1)."""
    times = [r.ts for r in flagged]
    out = []
    for i in range(len(bounds) - 1):
        opening, closing = closings[i], closings[i + 1]
        m = measure(opening, closing, flagged, inside=(bounds[i], bounds[i + 1]), times=times, with_flags=False)
        out.append(ConsumptionBucket(start=bounds[i], end=bounds[i + 1], value=m.value, first_read=opening,
                                     last_read=closing, estimated=m.estimated, suspect=m.suspect, gap=m.gap))
    return out


def billing(meter_id: str, channel: Channel, start: datetime, end: datetime, opening: Reading | None,
            closing: Reading | None, flagged: Sequence[Reading]) -> BillingRead:  # fmt: skip
    """The billing read of a period from its opening and closing reads."""
    m = measure(opening, closing, flagged)
    return BillingRead(meter_id=meter_id, channel=channel, start=_aware(start), end=_aware(end), opening=opening,
                       closing=closing, consumption=m.value, estimated=m.estimated, suspect=m.suspect,
                       flags=m.flags)  # fmt: skip


class ConsumptionQueries:
    """`consumption` and `billing_read` of a store. A backend provides only
    `_closings_and_flagged`: its index probes; the arithmetic above does the rest."""

    async def _closings_and_flagged(self, meter_id: str, channel: Channel, bounds: list[datetime],
                                    statuses: Sequence[Status]) -> tuple[list[Reading | None], list[Reading]]:  # fmt: skip
        """For each bound, the last read with one of `statuses` at or before it (None if
        none); and the flagged reads (FLAGGED_SQL) from the first bound's read to the last bound."""
        raise NotImplementedError

    async def consumption(self, meter_id: str, channel: Channel, *, start: datetime, end: datetime,
                          bucket: str, tz: str = "UTC") -> list[ConsumptionBucket]:  # fmt: skip
        """Consumption per bucket (see the rules at the top of this module)."""
        zone = check_request(channel, bucket, tz)
        bounds = bucket_bounds(start, end, bucket, zone)
        closings, flagged = await self._closings_and_flagged(meter_id, channel, bounds, USABLE)
        return buckets(bounds, closings, flagged)

    async def billing_read(self, meter_id: str, channel: Channel, *, start: datetime,
                           end: datetime) -> BillingRead:  # fmt: skip
        """Opening and closing billable reads of the period and the consumption between."""
        if _aware(end) < _aware(start):
            msg = f"billing read of {meter_id}: end {end.isoformat()} is before start {start.isoformat()}"
            raise InvalidRequest(msg)
        bounds = [_aware(start).astimezone(UTC), _aware(end).astimezone(UTC)]
        (opening, closing), flagged = await self._closings_and_flagged(meter_id, channel, bounds, BILLABLE)
        return billing(meter_id, channel, start, end, opening, closing, flagged)
