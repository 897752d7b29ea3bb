"""The account system's rules: which reads open and close a period, and what is measured
between them. Bills, the reads of an assignment (move-in, move-out) and consumption buckets
all follow them, so they agree with each other.

Pure: no I/O, no clock. A store answers a few index probes per period (storage.boundary
`Probes`: the last billable read at or before each boundary, and where needed the last real
one within the estimate window, the first one after the start, and the few flagged reads of
the range from a partial index); everything else is here, so both backends give the same
answer.

The rules (documented for the account system):

* **Periods.** A bill, an assignment and a consumption bucket each cover a period named
  `start` and `end` in every answer (the query parameters that ask for one are `from` and
  `to`); the reads that belong to it are those with start < ts <= end. A read exactly on a
  boundary closes one period and opens the next, so consecutive periods add up, and at a
  move the old consumer's closing read and the new consumer's opening read are the same
  read.
* **Billable reads.** Only reads with status valid, verified or estimated open or close a
  period; suspect and rejected reads never do (they are counted, see Flags).
* **The boundary read at a time t** (the closing read of a period that ends at t, the opening
  read of one that starts at t) is the last billable read at or before t. When that read is
  an estimate (status estimated, source estimate or the ESTIMATED flag), the last *real*
  billable read at or before t is taken instead if it lies within the estimate window before
  t (`storage.billing_estimate_window`, default 15 minutes); only without one is the estimate
  used, marked `estimated` with its method (linear | like_day | flat).
* **Opening after the start.** When no billable read exists at or before the start, the
  opening read is the first billable read after the start (up to the end), flagged
  `opening_after_start` (its ts says when), so that a meter's whole advance inside its first
  assignment, bill or bucket is measured. Only then: a read at or before the start always
  opens the period.
* **Periods that have not ended.** A period that starts at or after now is refused (there is
  nothing to measure yet). No read is taken from after now: a period that ends later is
  closed by the boundary read at now and answered with `complete: false` and `as_of` (the ts
  of the newest read used); a bucket that lies wholly after now has no value.
* **Consumption** is the closing value minus the opening value; a read flagged ROLLOVER
  between them carries `modulus=<float>` in its note (the register wrapped once), so the
  modulus is added back. Across a gap nothing is invented: the consumption of the missing
  time lands in the period where reads resume. A period with no billable read inside it
  (its closing read is at or before its start) has no value (None), never a made-up zero.
* **Flags.** `estimated`: the opening or the closing read is an estimate. `suspect`: a
  suspect or rejected read lies in the period (from the opening read, or the start if that
  is earlier, to the end — also before the opening and after the closing read), a rollover
  has no modulus, or the value is negative. `gap`: a read flagged GAP (reads were missing
  before it) lies between the opening and the closing read. A bill also counts its reads by
  what they show (`flag_counts`: suspect, rejected, estimated, each VEE quality flag such as
  gap or spike, and opening_after_start) over the same stretch, and `flags` lists the names.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import InvalidRequest
from gateway.model import Assignment, Channel, Quality, Reading, Status
from gateway.model.readings import CUMULATIVE_CHANNELS, flag_names
from gateway.model.shown import shown_sum
from storage.boundary import (
    BILLABLE,
    DEFAULT_ESTIMATE_WINDOW,
    Probes,
    aware,
    check_period,
    is_estimated,
    opening,
    probe_times,
)
from storage.records import BillingRead, ConsumptionBucket

BUCKETS = ("hour", "day", "month")
#: More buckets than this in one call is a mistake (or an attack), not a report.
MAX_BUCKETS = 10_000

#: Reads the flagged-reads index holds: anything but a plain valid real read. Stores put
#: exactly this predicate on their partial index and in the query, so the index is used.
FLAGGED_SQL = "(quality <> 0 OR status <> 'valid' OR source = 'estimate')"

_MODULUS = re.compile(r"\bmodulus=([0-9][0-9.eE+\-]*)")
_SUSPECT = frozenset({Status.SUSPECT, Status.REJECTED})

__all__ = ["BILLABLE", "BUCKETS", "FLAGGED_SQL", "MAX_BUCKETS", "ConsumptionQueries", "Measure", "billing",
           "bucket_bounds", "buckets", "check_request", "is_estimated", "measure", "modulus_of", "move_reads"]


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
    start, end = aware(start), aware(end)
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


@dataclass(frozen=True, slots=True)
class Measure:
    value: float | None
    estimated: bool
    suspect: bool
    gap: bool
    flag_counts: dict[str, int] = field(default_factory=dict)


def _within(flagged: Sequence[Reading], times: Sequence[datetime], lo: datetime, hi: datetime) -> Sequence[Reading]:
    """The reads of `flagged` (sorted by ts; `times` their ts) with lo < ts <= hi."""
    return flagged[bisect_right(times, lo):bisect_right(times, hi)]


def _counts(reads: Sequence[Reading]) -> dict[str, int]:
    """How many of `reads` show each status word and quality flag (each read once per name)."""
    counts: dict[str, int] = {}
    for r in reads:
        names = set(flag_names(r.quality))
        if r.status in _SUSPECT:
            names.add(r.status.value)
        if is_estimated(r):
            names.add("estimated")
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def measure(opening: Reading | None, closing: Reading | None, flagged: Sequence[Reading], *,
            period: tuple[datetime, datetime], times: Sequence[datetime] | None = None,
            count: bool = False) -> Measure:  # fmt: skip
    """Consumption of `period` (start, end] from `opening` to `closing`, by the rules above.

    `flagged` are the reads of the range that carry a flag or a non-valid status, sorted by
    ts (any superset of the period's and of (opening.ts, closing.ts] is fine); `times` their
    timestamps, when the caller measures many periods over the same reads. `count` fills
    `flag_counts` (bills; buckets do not report them).
    """
    if times is None:
        times = [r.ts for r in flagged]
    start, end = period
    lo = min(start, opening.ts) if opening is not None else start
    in_period = _within(flagged, times, lo, end)
    suspect = any(r.status in _SUSPECT for r in in_period)
    estimated = any(is_estimated(r) for r in (opening, closing) if r is not None)
    value: float | None = None
    gap = False
    if opening is not None and closing is not None:
        between = [r for r in _within(flagged, times, opening.ts, closing.ts) if r.status is not Status.REJECTED]
        gap = any(r.quality & Quality.GAP for r in between)
        if closing.ts > start:  # else no billable read lies inside the period
            wraps = []
            for r in between:
                if r.quality & Quality.ROLLOVER:
                    modulus = modulus_of(r)
                    if modulus is None:
                        suspect = True  # the wrap cannot be counted: the value is wrong by a modulus
                    else:
                        wraps.append(modulus)
            # In decimal, as the meter's display shows the reads: 12346.1 - 12345.6 is 0.5.
            value = shown_sum(closing.value, -opening.value, *wraps)
            suspect = suspect or value < 0
    counts: dict[str, int] = {}
    if count:
        # The opening read sits on the stretch's lower end (excluded above) unless it is after the start.
        ends = [opening] if opening is not None and opening.ts <= lo else []
        counts = _counts([*ends, *in_period])
    return Measure(value, estimated, suspect, gap, counts)


def buckets(bounds: Sequence[datetime], probes: Probes, now: datetime) -> list[ConsumptionBucket]:
    """Buckets between consecutive `bounds`; `probes` were taken at probe_times(bounds, now)."""
    chosen = probes.chosen()
    times = [r.ts for r in probes.flagged]
    out = []
    for i in range(len(bounds) - 1):
        start, end = bounds[i], bounds[i + 1]
        first, after = opening(chosen[i], probes.first_after, start, end)
        closing = chosen[i + 1]
        m = measure(first, closing, probes.flagged, period=(start, end), times=times)
        out.append(ConsumptionBucket(start=start, end=end, value=m.value, first_read=first, last_read=closing,
                                     estimated=m.estimated, suspect=m.suspect, gap=m.gap, opening_after_start=after,
                                     complete=end <= now))  # fmt: skip
    return out


def billing(meter_id: str, channel: Channel, start: datetime, end: datetime, probes: Probes,
            now: datetime) -> BillingRead:  # fmt: skip
    """The billing read of (start, end]; `probes` were taken at probe_times([start, end], now)."""
    chosen = probes.chosen()
    first, after = opening(chosen[0], probes.first_after, start, end)
    closing = chosen[-1]
    m = measure(first, closing, probes.flagged, period=(start, end), count=True)
    counts = dict(sorted({**m.flag_counts, **({"opening_after_start": 1} if after else {})}.items()))
    return BillingRead(meter_id=meter_id, channel=channel, start=start, end=end, opening=first, closing=closing,
                       consumption=m.value, estimated=m.estimated, suspect=m.suspect, flags=list(counts),
                       flag_counts=counts, opening_after_start=after, complete=end <= now,
                       as_of=None if closing is None else closing.ts)  # fmt: skip


def move_reads(a: Assignment, probes: Probes, until: datetime) -> Assignment:
    """The assignment with its opening and closing read; `probes` were taken at
    [a.start, until] (until: its end, or now while it is open)."""
    chosen = probes.chosen()
    first, after = opening(chosen[0], probes.first_after, a.start, until)
    closing = chosen[1] if a.end is not None else None
    return replace(a, opening=first, closing=closing, opening_after_start=after,
                   opening_read=None if first is None else first.value,
                   closing_read=None if closing is None else closing.value)  # fmt: skip


class ConsumptionQueries:
    """`consumption`, `billing_read` and the reads of assignments, for a store. A backend
    provides `_probe` (its index probes) and `_clock`; the rules above do the rest."""

    _clock: Callable[[], datetime]
    #: How far before a boundary a real read still wins over a newer estimate.
    estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW

    async def _probe(self, meter_id: str, channel: Channel, times: list[datetime], *,
                     flagged_until: datetime | None) -> Probes:  # fmt: skip
        """In one snapshot: for each of `times` (ascending) the last billable read at or before
        it, and for those that are estimates the last real billable read within
        `estimate_window` before the time; the first billable read after times[0] up to
        times[-1] when there is none at or before times[0]; and, unless `flagged_until` is
        None, the flagged reads (FLAGGED_SQL) from `estimate_window` before the first time's
        read (or before times[0]) to `flagged_until`."""
        raise NotImplementedError

    def _now(self, now: datetime | None) -> datetime:
        return aware(now if now is not None else self._clock()).astimezone(UTC)

    async def consumption(self, meter_id: str, channel: Channel, *, start: datetime, end: datetime,
                          bucket: str, tz: str = "UTC", now: datetime | None = None) -> list[ConsumptionBucket]:  # fmt: skip
        """Consumption per bucket (see the rules at the top of this module)."""
        zone = check_request(channel, bucket, tz)
        at = self._now(now)
        check_period(start, end, at)
        bounds = bucket_bounds(start, end, bucket, zone)
        probes = await self._probe(meter_id, channel, probe_times(bounds, at), flagged_until=bounds[-1])
        return buckets(bounds, probes, at)

    async def billing_read(self, meter_id: str, channel: Channel, *, start: datetime,
                           end: datetime, now: datetime | None = None) -> BillingRead:  # fmt: skip
        """Opening and closing read of the period and the consumption between (the rules above)."""
        at = self._now(now)
        start, end = aware(start).astimezone(UTC), aware(end).astimezone(UTC)
        check_period(start, end, at, allow_empty=True)
        probes = await self._probe(meter_id, channel, probe_times([start, end], at), flagged_until=end)
        return billing(meter_id, channel, start, end, probes, at)

    async def _with_reads(self, found: Sequence[tuple[Assignment, Channel]]) -> list[Assignment]:
        """Each assignment with its opening and closing read of `channel` (the meter's billing
        register), derived now from the readings."""
        at = self._now(None)
        out = []
        for a, channel in found:
            until = max(a.start, min(a.end or at, at))
            probes = await self._probe(a.meter_id, channel, [a.start, until], flagged_until=None)
            out.append(move_reads(a, probes, until))
        return out
