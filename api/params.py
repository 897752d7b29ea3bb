"""Query parameters shared by the routes: page size, time ranges with zones, cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Query

from api.pagination import decode_cursor
from api.schemas.time import Timestamp
from gateway.errors import InvalidRequest

Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size", examples=[100])]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page",
                                     examples=["WyJNLTAwMTAiXQ"])]
From = Annotated[Timestamp | None, Query(alias="from", description="Inclusive, ISO 8601 with zone",
                                        examples=["2026-03-01T00:00:00Z"])]
To = Annotated[Timestamp | None, Query(alias="to", description="Exclusive, ISO 8601 with zone",
                                      examples=["2026-04-01T00:00:00Z"])]
#: Lists that were a bare JSON array before every list paged (issue 27): `array` answers that old
#: shape for one more release, then goes (see CHANGELOG.md).
Shape = Annotated[Literal["page", "array"], Query(
    description="`page` (default): {items, next_cursor}. `array`: the bare JSON array this list gave in "
                "release 0.1; deprecated, kept for one release", examples=["page"])]

# Timestamps outside this range are mistakes (and would overflow date arithmetic).
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MAX_SEQ = 2**62


def utc(value: datetime, name: str) -> datetime:
    """An aware timestamp in UTC, or InvalidRequest saying what is wrong with it."""
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{name}={value.isoformat()} has no time zone; add Z or an offset (e.g. 2026-01-01T00:00:00Z)"
        raise InvalidRequest(msg)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        value = _EARLIEST - timedelta(days=1)
    if not _EARLIEST <= value < _LATEST:
        msg = f"{name} is outside the years 1900..2199"
        raise InvalidRequest(msg)
    return value


def period(start: datetime | None, end: datetime | None, now: datetime, default: timedelta) -> tuple[datetime, datetime]:
    """[from, to) with defaults: to = now, from = to - `default`; from must be before to."""
    end_ = utc(end, "to") if end is not None else now
    start_ = utc(start, "from") if start is not None else max(end_ - default, _EARLIEST)
    if start_ >= end_:
        msg = f"from ({start_.isoformat()}) must be before to ({end_.isoformat()})"
        raise InvalidRequest(msg)
    return start_, end_


def decode_seq(cursor: str | None) -> int:
    """A feed cursor's seq (0 for none)."""
    if not cursor:
        return 0
    (seq,) = decode_cursor(cursor, 1)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < _MAX_SEQ:
        msg = f"cursor {cursor[:40]!r} is not one this API issued"
        raise InvalidRequest(msg)
    return seq


def decode_ts_key(cursor: str, kind: type) -> tuple[datetime, Any]:
    """A (ts, key) cursor: key is a str (channel) or an int (seq)."""
    ts, key = decode_cursor(cursor, 2)
    try:
        when = datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        when = None
    if when is None or when.tzinfo is None or not isinstance(key, kind) or isinstance(key, bool) \
            or (isinstance(key, int) and not 0 <= key < _MAX_SEQ):
        msg = f"cursor {cursor[:40]!r} is not one this API issued"
        raise InvalidRequest(msg)
    return when, key
