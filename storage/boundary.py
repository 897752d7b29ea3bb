"""Which read opens and which read closes a period: the boundary-read rule of bills, move reads
and consumption buckets (the rules in full are in storage.consumption's docstring).

Pure: no I/O, no clock. A store answers the few index probes a period needs (`Probes`);
this module chooses from them, so both backends choose the same read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.errors import InvalidPeriod
from gateway.model import Quality, Reading, Source, Status

#: Status of reads a period may open or close on; suspect and rejected reads never do.
BILLABLE = (Status.VALID, Status.VERIFIED, Status.ESTIMATED)
#: Status of a real read (a billable read that is not an estimate, see `is_estimated`).
REAL = (Status.VALID, Status.VERIFIED)
#: How far before a boundary a real read is still preferred over a newer estimate
#: (`storage.billing_estimate_window`).
DEFAULT_ESTIMATE_WINDOW = timedelta(minutes=15)

_METHOD = re.compile(r"\bestimate=([a-z_]+)")


def estimate_sql(alias: str) -> str:
    """SQL that is true for an estimated read (as `is_estimated`), on the readings row `alias`."""
    return (f"({alias}.status = '{Status.ESTIMATED.value}' OR {alias}.source = '{Source.ESTIMATE.value}'"
            f" OR ({alias}.quality & {int(Quality.ESTIMATED)}) <> 0)")


def real_sql(alias: str) -> str:
    """SQL that is true for a real billable read (billable and not an estimate) of row `alias`."""
    statuses = ", ".join(f"'{s.value}'" for s in REAL)
    return (f"({alias}.status IN ({statuses}) AND {alias}.source <> '{Source.ESTIMATE.value}'"
            f" AND ({alias}.quality & {int(Quality.ESTIMATED)}) = 0)")


def is_estimated(r: Reading) -> bool:
    """An estimate: status estimated, source estimate or the ESTIMATED quality flag."""
    return r.status is Status.ESTIMATED or r.source is Source.ESTIMATE or bool(r.quality & Quality.ESTIMATED)


def estimate_method(r: Reading) -> str | None:
    """How an estimate was made ('linear', 'like_day', 'flat'; 'profile' on stores written before
    like-day had its name; from VEE's `estimate=<method>` note;
    'unknown' without one); None for a real read."""
    if not is_estimated(r):
        return None
    match = _METHOD.search(r.note or "")
    return match[1] if match else "unknown"


@dataclass(frozen=True, slots=True)
class Probes:
    """What a store found for a list of probe times (ascending): one index probe each, and a
    few more where needed. `first_after` and `flagged` are what the caller asked for."""

    #: For each time, the last billable read at or before it (None: none at all).
    last: list[Reading | None]
    #: For each time whose `last` is an estimate: the last real billable read at or before it
    #: and within the window before it, if there is one.
    real: dict[int, Reading] = field(default_factory=dict)
    #: The first billable read after the first time, up to the last one (asked for when
    #: `last[0]` is None: the opening read after the start).
    first_after: Reading | None = None
    #: The flagged reads (storage.consumption.FLAGGED_SQL), sorted by ts, from the window
    #: before the first time's read up to the end the caller gave.
    flagged: list[Reading] = field(default_factory=list)

    def chosen(self) -> list[Reading | None]:
        """The boundary read of each probe time: the last billable read at or before it,
        unless that is an estimate and a real read lies within the window before the time."""
        return [self.real.get(i, last) for i, last in enumerate(self.last)]


def probe_times(bounds: Sequence[datetime], now: datetime) -> list[datetime]:
    """The times to probe for `bounds`: no read is taken from after `now`, so a bound in the
    future is probed at now (its read is the newest there is)."""
    return [min(b, now) for b in bounds]


def opening(chosen: Reading | None, first_after: Reading | None, start: datetime,
            end: datetime) -> tuple[Reading | None, bool]:  # fmt: skip
    """The opening read of (start, end]: the boundary read at start; without one, the first
    billable read after start if it lies at or before end (then True: opening_after_start)."""
    if chosen is not None:
        return chosen, False
    if first_after is not None and start < first_after.ts <= end:
        return first_after, True
    return None, False


def aware(t: datetime) -> datetime:
    """`t` with a zone (naive means UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def check_period(start: datetime, end: datetime | None, now: datetime, *,
                 names: tuple[str, str] = ("start", "end"), allow_empty: bool = False) -> None:  # fmt: skip
    """InvalidPeriod unless start is before end (or equal, with `allow_empty`; None: not
    known yet) and before now. `names` are the caller's words for the two bounds (the API's
    are 'from' and 'to')."""
    start, now = aware(start), aware(now)
    end = None if end is None else aware(end)
    if end is not None and (end < start or (end == start and not allow_empty)):
        msg = f"{names[0]} ({start.isoformat()}) must be before {names[1]} ({end.isoformat()})"
        raise InvalidPeriod(names[1], msg)
    if start >= now:
        msg = (f"{names[0]} ({start.isoformat()}) is in the future (now {now.astimezone(UTC).isoformat()}): the "
               "period has not begun, so it has no reads yet; ask once it has begun (a period that has begun "
               "but not ended is answered with complete: false and as_of)")
        raise InvalidPeriod(names[0], msg)


__all__ = ["BILLABLE", "DEFAULT_ESTIMATE_WINDOW", "REAL", "Probes", "aware", "check_period", "estimate_method",
           "estimate_sql", "is_estimated", "opening", "probe_times", "real_sql"]
