"""Columnar batches of readings: the vocabulary the decoder fills and VEE checks.

A `ReadingFrame` holds one batch as numpy arrays (series index, ts in µs UTC, value, kind,
quality, status, source, received_at); VEE checks run on it whole. A `SeriesTable` gives
each (meter_id, channel) a stable small integer, the row of that series in every per-series
state array.

The write path runs one way through these types: a decoder (`gateway.normalise.frame.FrameDecoder`)
makes a frame, the validator flags it, and `to_readings` materialises it for the spool with the
validator's series table; no stage calls back into an earlier one. `from_readings` serves callers
that hold a list (`Validator.validate`, seeding VEE from the store).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.model.readings import Channel, Kind, Quality, Reading, Source, Status

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

#: "No timestamp" in an int64 µs column (e.g. a reading without received_at).
NO_TS = int(np.iinfo(np.int64).min)
STATUSES: tuple[Status, ...] = tuple(Status)
SOURCES: tuple[Source, ...] = tuple(Source)
STATUS_CODE: dict[Status, int] = {s: i for i, s in enumerate(STATUSES)}
SOURCE_CODE: dict[Source, int] = {s: i for i, s in enumerate(SOURCES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)  # made once: a timedelta per call cost as much as the subtraction

def to_us(dt: datetime) -> int:
    """Microseconds since the epoch, UTC; a naive datetime is taken as UTC (the model's rule)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def filled(n: int, value: int, dtype: type[np.signedinteger[Any]]) -> npt.NDArray[Any]:
    """np.full without its Python wrapper: frames of a poll or two are built many times a second."""
    out = np.empty(n, dtype=dtype)
    out.fill(value)
    return out


def us_column(stamps: Sequence[datetime], known: dict[int, datetime] | None = None) -> I64:
    """µs column of datetimes. The polls of one round share their timestamps, so each distinct
    value is converted once (datetime.timestamp() is exact to the µs for present-day dates).
    `known` collects the UTC ones by µs value, for `ReadingFrame.stamps`."""
    n = len(stamps)
    if n and stamps.count(stamps[0]) == n:
        us = to_us(stamps[0])
        if known is not None and stamps[0].tzinfo is UTC:
            known[us] = stamps[0]
        return filled(n, us, np.int64)
    seen: dict[datetime, int] = {}
    for d in stamps:
        if d not in seen:
            us = seen[d] = to_us(d)
            if known is not None and d.tzinfo is UTC:
                known[us] = d
    return np.fromiter(map(seen.__getitem__, stamps), dtype=np.int64, count=n)


class SeriesTable:
    """Stable integer ids for (meter_id, channel): the row of a series in per-series state arrays."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, Channel], int] = {}
        self.keys: list[tuple[str, Channel]] = []
        self._rank: I64 | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def id(self, meter_id: str, channel: Channel) -> int:
        """The series' id, given on first sight and never changed."""
        key = (meter_id, channel)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return sid

    def ids(self, meter_id: str, channels: Sequence[Channel]) -> list[int]:
        """`id` of each channel of one meter, in one call."""
        known = self._ids
        out = []
        for channel in channels:
            key = (meter_id, channel)
            sid = known.get(key)
            if sid is None:
                sid = known[key] = len(self.keys)
                self.keys.append(key)
            out.append(sid)
        return out

    def find(self, meter_id: str, channel: Channel) -> int | None:
        return self._ids.get((meter_id, channel))

    def rank(self) -> I64:
        """Position of each series in (meter_id, channel) order, for sorting output like a person would."""
        if self._rank is None or len(self._rank) != len(self.keys):
            order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
            rank = np.empty(len(order), dtype=np.int64)
            rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
            self._rank = rank
        return self._rank


@dataclass(slots=True)
class ReadingFrame:
    """One batch of readings as columns. Row i of every array is one reading.

    `origin` is the index of the row's Reading in `readings` (the list it was built from),
    -1 for rows made here (estimates); `notes` holds the sparse free-text notes by row.
    """

    series: I64
    ts: I64  # µs since the epoch, UTC
    value: F64
    cumulative: B
    quality: I64
    status: I8  # index into STATUSES
    source: I8  # index into SOURCES
    received: I64  # µs, NO_TS when unknown
    origin: I64
    notes: dict[int, str] = field(default_factory=dict)
    readings: Sequence[Reading] | None = None
    #: UTC datetimes of some µs values in ts / received (those of the polls decoded), so that
    #: Reading objects get them without converting back.
    stamps: dict[int, datetime] | None = None

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def empty(cls) -> ReadingFrame:
        return cls.build(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0, bool))

    @classmethod
    def build(cls, series: I64, ts: I64, value: F64, cumulative: B, *, quality: I64 | None = None,
              received: I64 | None = None, source: Source = Source.MODBUS, status: Status = Status.VALID) -> ReadingFrame:
        """A frame of new readings (no Reading objects behind it)."""
        n = len(series)
        return cls(series=series, ts=ts, value=value, cumulative=cumulative,
                   quality=np.zeros(n, np.int64) if quality is None else quality,
                   status=filled(n, STATUS_CODE[status], np.int8), source=filled(n, SOURCE_CODE[source], np.int8),
                   received=filled(n, NO_TS, np.int64) if received is None else received,
                   origin=filled(n, -1, np.int64))

    @classmethod
    def from_readings(cls, readings: Sequence[Reading], table: SeriesTable) -> ReadingFrame:
        """Columns of `readings`; new (meter_id, channel) pairs get ids in `table`."""
        n = len(readings)
        ids = table.id
        series = np.fromiter((ids(r.meter_id, r.channel) for r in readings), dtype=np.int64, count=n)
        value = np.fromiter((r.value for r in readings), dtype=np.float64, count=n)
        cumulative = np.fromiter((r.kind is Kind.CUMULATIVE for r in readings), dtype=bool, count=n)
        quality = np.fromiter((r.quality for r in readings), dtype=np.int64, count=n)
        status = np.fromiter((STATUS_CODE[r.status] for r in readings), dtype=np.int8, count=n)
        source = np.fromiter((SOURCE_CODE[r.source] for r in readings), dtype=np.int8, count=n)
        ts = us_column([r.ts for r in readings])
        received = np.full(n, NO_TS, dtype=np.int64)
        known = [i for i, r in enumerate(readings) if r.received_at is not None]
        if known:
            at = [readings[i].received_at for i in known]
            received[np.asarray(known, dtype=np.int64)] = us_column(at)  # type: ignore[arg-type]
        return cls(series, ts, value, cumulative, quality, status, source, received,
                   np.arange(n, dtype=np.int64), readings=readings)

    def take(self, rows: I64 | B) -> ReadingFrame:
        """A frame of the selected rows (indices or mask); notes follow their rows."""
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        notes = {}
        if self.notes:
            where = {int(old): new for new, old in enumerate(idx.tolist()) if int(old) in self.notes}
            notes = {new: self.notes[old] for old, new in where.items()}
        return ReadingFrame(self.series[idx], self.ts[idx], self.value[idx], self.cumulative[idx], self.quality[idx],
                            self.status[idx], self.source[idx], self.received[idx], self.origin[idx], notes,
                            self.readings, self.stamps)

    def concat(self, other: ReadingFrame) -> ReadingFrame:
        """This frame's rows then `other`'s; `other` must have no Reading objects behind it."""
        n = len(self)
        notes = dict(self.notes)
        notes.update({n + i: text for i, text in other.notes.items()})
        def cat(a: str) -> npt.NDArray[np.generic]:
            joined: npt.NDArray[np.generic] = np.concatenate([getattr(self, a), getattr(other, a)])
            return joined

        return ReadingFrame(cat("series"), cat("ts"), cat("value"), cat("cumulative"),  # type: ignore[arg-type]
                            cat("quality"), cat("status"), cat("source"), cat("received"),  # type: ignore[arg-type]
                            np.concatenate([self.origin, np.full(len(other), -1, np.int64)]), notes, self.readings,
                            {**(self.stamps or {}), **(other.stamps or {})} or None)

    def to_readings(self, table: SeriesTable) -> list[Reading]:
        """Reading objects of every row; rows that came from a Reading keep it unless something changed."""
        src = self.readings
        if src is None:
            return self._new_readings(table, None)
        out: list[Reading] = []
        quality = self.quality.tolist()
        status = self.status.tolist()
        origin = self.origin.tolist()
        notes = self.notes
        made = iter(self._new_readings(table, np.flatnonzero(self.origin < 0)))
        for i, o in enumerate(origin):
            if o < 0:
                out.append(next(made))
                continue
            r = src[o]
            q, s = quality[i], STATUSES[status[i]]
            note = notes.get(i, r.note)
            changed = q != r.quality or s is not r.status or note is not r.note
            if r.ts.tzinfo is not UTC:  # timestamps leave VEE in UTC
                ts = r.ts.replace(tzinfo=UTC) if r.ts.tzinfo is None else r.ts.astimezone(UTC)
                r = replace(r, ts=ts)
            out.append(replace(r, quality=Quality(q), status=s, note=note) if changed else r)
        return out

    def _new_readings(self, table: SeriesTable, rows: I64 | None) -> list[Reading]:
        """Reading objects of `rows` (None: every row), made from the columns (decoded polls, estimates).

        This is the pipeline's one loop per reading (the spool takes objects), so the columns
        are read as lists once, and timestamps, flags, kinds, statuses and sources, shared by
        many rows, are made once."""
        columns = (self.series, self.ts, self.value, self.cumulative, self.quality, self.status, self.source,
                   self.received)
        series, ts, value, cumulative, quality, status, source, received = (
            [c.tolist() for c in columns] if rows is None else [c[rows].tolist() for c in columns])
        n = len(series)
        if not n:
            return []
        flags = {q: Quality(q) for q in set(quality)}
        meters, channels = zip(*map(table.keys.__getitem__, series), strict=True)
        notes = self.notes
        # map() over the columns calls Reading with positional arguments, in its field order,
        # and no Python loop body per reading.
        return list(map(Reading, meters, channels, _datetimes(ts, self.stamps), value,
                        map((Kind.INSTANTANEOUS, Kind.CUMULATIVE).__getitem__, cumulative),
                        map(flags.__getitem__, quality), map(STATUSES.__getitem__, status),
                        map(SOURCES.__getitem__, source), _datetimes(received, self.stamps), repeat(None, n),
                        map(notes.get, range(n) if rows is None else rows.tolist()) if notes else repeat(None, n)))


def _datetimes(stamps: list[int], known: Mapping[int, datetime] | None) -> list[datetime | None]:
    """µs column -> UTC datetimes (None for NO_TS); a batch holds few distinct instants, and
    those the decoder read from the polls (`known`) are not made again."""
    made: dict[int, datetime | None] = {NO_TS: None}
    for us in set(stamps) - made.keys():
        dt = known.get(us) if known else None
        made[us] = dt if dt is not None else from_us(us)
    return list(map(made.__getitem__, stamps))


__all__ = [
    "F64",
    "I8",
    "I64",
    "NO_TS",
    "SOURCES",
    "SOURCE_CODE",
    "STATUSES",
    "STATUS_CODE",
    "B",
    "ReadingFrame",
    "SeriesTable",
    "filled",
    "from_us",
    "to_us",
    "us_column",
]
