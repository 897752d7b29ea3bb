"""Columnar batches of readings, and a register decoder that fills them without a Python loop per value.

A `ReadingFrame` holds one batch as numpy arrays (series index, ts in µs UTC, value, kind,
quality, status, source, received_at); VEE checks run on it whole. A `SeriesTable` gives
each (meter_id, channel) a stable small integer, the row of that series in every per-series
state array. `FrameDecoder` decodes many `RawRegisters` of one device profile at once: the
words of a block are stacked into a 2-D uint16 array and each register spec becomes one
byte-order-aware `view` (e.g. ``>f4``), so the cost per poll is a few array operations.

The list path (`ReadingFrame.from_readings` / `to_readings`) keeps today's pipeline, which
hands `list[Reading]` around, working unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np
import numpy.typing as npt

from drivers.samples import RawRegisters
from gateway.model import Channel, DeadLetter, Event, EventKind, Kind, Quality, Reading, Severity, Source, Status
from gateway.model.profiles import ByteOrder, DataType, DeviceFlag, DeviceProfile, RegisterSpec
from gateway.normalise.units import conversion_factor

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

# numpy dtype of each register type, read big-endian once the words are in ABCD byte order.
_NP_TYPE: dict[DataType, str] = {
    DataType.INT16: ">i2", DataType.UINT16: ">u2", DataType.INT32: ">i4", DataType.UINT32: ">u4",
    DataType.INT64: ">i8", DataType.UINT64: ">u8", DataType.FLOAT32: ">f4", DataType.FLOAT64: ">f8",
}
_FLAG_QUALITY: dict[DeviceFlag, Quality] = {DeviceFlag.TAMPER: Quality.TAMPER}


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch, UTC; a naive datetime is taken as UTC (the model's rule)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _us_column(stamps: Sequence[datetime]) -> I64:
    """µs column of datetimes. The polls of one round share their timestamps, so each distinct
    value is converted once (datetime.timestamp() is exact to the µs for present-day dates)."""
    n = len(stamps)
    if n and stamps.count(stamps[0]) == n:
        return np.full(n, to_us(stamps[0]), dtype=np.int64)
    seen: dict[datetime, int] = {}
    return np.fromiter((seen[d] if d in seen else seen.setdefault(d, to_us(d)) for d in stamps),
                       dtype=np.int64, count=n)


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
                   status=np.full(n, STATUS_CODE[status], np.int8), source=np.full(n, SOURCE_CODE[source], np.int8),
                   received=np.full(n, NO_TS, np.int64) if received is None else received,
                   origin=np.full(n, -1, np.int64))

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
        ts = _us_column([r.ts for r in readings])
        received = np.full(n, NO_TS, dtype=np.int64)
        known = [i for i, r in enumerate(readings) if r.received_at is not None]
        if known:
            at = [readings[i].received_at for i in known]
            received[np.asarray(known, dtype=np.int64)] = _us_column(at)  # type: ignore[arg-type]
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
                            self.readings)

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
                            np.concatenate([self.origin, np.full(len(other), -1, np.int64)]), notes, self.readings)

    def to_readings(self, table: SeriesTable) -> list[Reading]:
        """Reading objects of every row; rows that came from a Reading keep it unless something changed."""
        out: list[Reading] = []
        src = self.readings
        quality = self.quality.tolist()
        status = self.status.tolist()
        origin = self.origin.tolist()
        notes = self.notes
        for i, o in enumerate(origin):
            if o >= 0 and src is not None:
                r = src[o]
                q, s = quality[i], STATUSES[status[i]]
                note = notes.get(i, r.note)
                changed = q != r.quality or s is not r.status or note is not r.note
                if r.ts.tzinfo is not UTC:  # timestamps leave VEE in UTC
                    ts = r.ts.replace(tzinfo=UTC) if r.ts.tzinfo is None else r.ts.astimezone(UTC)
                    r = replace(r, ts=ts)
                out.append(replace(r, quality=Quality(q), status=s, note=note) if changed else r)
            else:
                meter_id, channel = table.keys[int(self.series[i])]
                rec = int(self.received[i])
                out.append(Reading(
                    meter_id=meter_id, channel=channel, ts=from_us(int(self.ts[i])), value=float(self.value[i]),
                    kind=Kind.CUMULATIVE if self.cumulative[i] else Kind.INSTANTANEOUS, quality=Quality(quality[i]),
                    status=STATUSES[status[i]], source=SOURCES[int(self.source[i])],
                    received_at=None if rec == NO_TS else from_us(rec), note=notes.get(i),
                ))
        return out


# -- vectorised register decoding ------------------------------------------------------

def decode_columns(words: npt.NDArray[np.uint16], spec: RegisterSpec) -> npt.NDArray[np.generic]:
    """The numbers held by `words` (one row per poll, spec.words columns, as received), before scale.

    Reordering to ABCD is a column reversal (low word first) and a choice of byte storage
    (bytes swapped within a word), then one view as a big-endian numpy type.
    """
    cols = words[:, ::-1] if spec.order in (ByteOrder.CDAB, ByteOrder.DCBA) else words
    storage = "<u2" if spec.order in (ByteOrder.BADC, ByteOrder.DCBA) else ">u2"
    raw: npt.NDArray[np.generic] = np.ascontiguousarray(cols, dtype=storage).view(_NP_TYPE[spec.type]).reshape(-1)
    return raw


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each register of a profile sits in one poll's flattened words."""

    starts: tuple[int, ...]  # first word of each block in the flattened row
    width: int  # words per poll
    columns: tuple[int | None, ...]  # per RegisterSpec: first word, None if not read
    flag_columns: tuple[int | None, ...]  # per FlagSpec


def _layout(profile: DeviceProfile, blocks: Sequence[tuple[int, int, int]]) -> _Layout:
    starts, pos = [], 0
    for _, _, count in blocks:
        starts.append(pos)
        pos += count

    def column(function: int, address: int, words: int) -> int | None:
        for (fc, start, count), first in zip(blocks, starts, strict=True):
            if fc == function and start <= address and address + words <= start + count:
                return first + address - start
        return None

    return _Layout(tuple(starts), pos, tuple(column(s.function.code, s.address, s.words) for s in profile.registers),
                   tuple(column(f.function.code, f.address, 1) for f in profile.flags))


class FrameDecoder:
    """RawRegisters of many polls -> one ReadingFrame (+ dead letters, + tamper events).

    Same results as `Normaliser.registers` poll by poll (a test holds them together), at a
    cost of a few numpy operations per (profile, register) instead of per value.
    """

    def __init__(self, profiles: Mapping[str, DeviceProfile], series: SeriesTable) -> None:
        self._profiles = profiles
        self.series = series
        self._ids: dict[str, dict[str, int]] = {}  # profile name -> meter_id -> row in _id_rows
        self._id_rows: dict[str, list[list[int]]] = {}
        self._id_arrays: dict[str, I64] = {}
        self._tampered: set[str] = set()

    def decode(self, raws: Sequence[RawRegisters]) -> tuple[ReadingFrame, list[DeadLetter], list[Event]]:
        dead: list[DeadLetter] = []
        events: list[Event] = []
        meters = [raw.meter_id for raw in raws]
        profiles = list(map(self._profiles.get, meters))
        if profiles and profiles[0] is not None and profiles.count(profiles[0]) == len(profiles):
            # One profile for the whole batch: the usual case.
            frames = [self._decode_group(profiles[0], list(raws), dead, events, meters)]
        else:
            groups: dict[str, list[RawRegisters]] = {}
            for raw, profile in zip(raws, profiles, strict=True):
                if profile is None:
                    dead.append(_dead(raw, "unknown_meter", "no profile configured for this meter", ""))
                else:
                    groups.setdefault(profile.name, []).append(raw)
            frames = [self._decode_group(self._profiles[g[0].meter_id], g, dead, events) for g in groups.values()]
        frames = [f for f in frames if len(f)]
        if not frames:
            return ReadingFrame.empty(), dead, events
        frame = frames[0]
        for other in frames[1:]:
            frame = frame.concat(other)
        return frame, dead, events

    def _series_ids(self, profile: DeviceProfile, meters: list[str]) -> I64:
        """(n polls, n registers) series ids, cached per meter."""
        rows = self._ids.setdefault(profile.name, {})
        table = self._id_rows.setdefault(profile.name, [])
        try:
            at = np.fromiter(map(rows.__getitem__, meters), dtype=np.int64, count=len(meters))
        except KeyError:  # meters seen for the first time
            channels = [spec.channel for spec in profile.registers]
            for m in set(meters) - rows.keys():
                rows[m] = len(table)
                table.append(self.series.ids(m, channels))
            self._id_arrays.pop(profile.name, None)
            at = np.fromiter(map(rows.__getitem__, meters), dtype=np.int64, count=len(meters))
        ids = self._id_arrays.get(profile.name)
        if ids is None:
            ids = self._id_arrays[profile.name] = np.asarray(table, dtype=np.int64).reshape(len(table), -1)
        return ids[at]

    def _decode_group(self, profile: DeviceProfile, group: list[RawRegisters], dead: list[DeadLetter],
                      events: list[Event], meters: list[str] | None = None) -> ReadingFrame:
        n = len(group)
        # The only per-poll Python: pulling the fields out; everything after works on arrays.
        meters = meters if meters is not None else [r.meter_id for r in group]
        stamps = [r.ts for r in group]
        received_at = [r.received_at for r in group]
        blocks = [r.blocks for r in group]
        shape = [(b.function, b.address, len(b.words)) for b in blocks[0]]
        layout = _layout(profile, shape)
        if len(shape) == 1:
            chunks = [bs[0].words for bs in blocks]
            same = [bs[0].address for bs in blocks] == [shape[0][1]] * n and \
                [bs[0].function for bs in blocks] == [shape[0][0]] * n
        else:
            chunks = [b.words for bs in blocks for b in bs]
            same = [b.address for bs in blocks for b in bs] == [a for _, a, _ in shape] * n and \
                [b.function for bs in blocks for b in bs] == [f for f, _, _ in shape] * n
        flat = np.fromiter(chain.from_iterable(chunks), dtype=np.uint16) if same else np.empty(0, np.uint16)
        if not same or flat.size != n * layout.width:
            # Polls of one profile read the same blocks; if not, decode them one layout at a time.
            like = [r for r in group if [(b.function, b.address, len(b.words)) for b in r.blocks] == shape]
            rest = [r for r in group if [(b.function, b.address, len(b.words)) for b in r.blocks] != shape]
            frame = self._decode_group(profile, like, dead, events)
            return frame.concat(self._decode_group(profile, rest, dead, events)) if rest else frame
        words = flat.reshape(n, layout.width)
        ts = _us_column(stamps)
        received = _us_column(received_at)
        quality = self._flags(profile, layout, words, group, meters, dead, events)
        ids = self._series_ids(profile, meters)
        keep = np.ones((n, len(profile.registers)), dtype=bool)
        values = np.empty((n, len(profile.registers)), dtype=np.float64)
        for j, (spec, col) in enumerate(zip(profile.registers, layout.columns, strict=True)):
            where = f"{spec.function.value} {spec.address:#06x}"
            if col is None:
                dead.extend(_dead(r, "missing_register", f"{spec.channel.value}: register {where} was not read", "")
                            for r in group)
                keep[:, j] = False
                continue
            block = words[:, col:col + spec.words]
            raw = decode_columns(block, spec)
            # Garbage words decode to NaN (signalling ones too) or overflow: dead letters below.
            with np.errstate(invalid="ignore", over="ignore"):
                v = raw.astype(np.float64) * spec.scale + spec.offset
                v *= conversion_factor(spec.unit, spec.channel)
            bad = ~np.isfinite(v)
            na = raw == spec.not_available if spec.not_available is not None else None
            if na is not None and na.any():
                for i in np.flatnonzero(na).tolist():
                    number = raw[i].item()
                    dead.append(_dead(group[i], "not_available", f"{spec.channel.value} at {where}: {spec.type.value} "
                                      f"{number:#x} is the device's 'not available' marker",
                                      str(block[i].tolist())))
                keep[:, j] &= ~na
                bad &= ~na
            if bad.any():
                # Not a number cannot be stored as a reading; it is kept as data (a dead letter).
                for i in np.flatnonzero(bad).tolist():
                    dead.append(_dead(group[i], "non_finite", f"{spec.channel.value} at {where} decoded to {v[i]}",
                                      str(block[i].tolist())))
                keep[:, j] &= ~bad
            values[:, j] = v
        k = len(profile.registers)
        cumulative = np.tile(np.asarray([s.kind is Kind.CUMULATIVE for s in profile.registers]), n)
        frame = ReadingFrame.build(ids.reshape(-1), np.repeat(ts, k), values.reshape(-1), cumulative,
                                   quality=np.repeat(quality, k), received=np.repeat(received, k))
        return frame if keep.all() else frame.take(keep.reshape(-1))

    def _flags(self, profile: DeviceProfile, layout: _Layout, words: npt.NDArray[np.uint16],
               group: list[RawRegisters], meters: list[str], dead: list[DeadLetter], events: list[Event]) -> I64:
        """Quality bits the devices report in their status registers, one per poll."""
        quality = np.zeros(len(group), dtype=np.int64)
        for flag, col in zip(profile.flags, layout.flag_columns, strict=True):
            if col is None:
                where = f"{flag.function.value} {flag.address:#06x}"
                dead.extend(_dead(r, "missing_register", f"{flag.flag.value} flag: register {where} was not read", "")
                            for r in group)
                continue
            raised = ((words[:, col] >> flag.bit) & 1).astype(bool) == flag.active
            quality[raised] |= int(_FLAG_QUALITY[flag.flag])
        if profile.flags:
            # One TAMPER event when a meter starts reporting it, as the Normaliser does.
            tampered = (quality & int(Quality.TAMPER)) != 0
            before = np.fromiter(map(self._tampered.__contains__, meters), dtype=bool, count=len(meters))
            for i in np.flatnonzero(tampered & ~before).tolist():
                raw = group[i]
                if raw.meter_id not in self._tampered:  # the same meter twice in one batch
                    events.append(Event(raw.ts, raw.meter_id, EventKind.TAMPER, Severity.WARNING,
                                        "the meter reports tamper in its status register"))
                    self._tampered.add(raw.meter_id)
            for i in np.flatnonzero(~tampered & before).tolist():
                self._tampered.discard(meters[i])
        return quality


def _dead(raw: RawRegisters, reason: str, detail: str, payload: str) -> DeadLetter:
    return DeadLetter(ts=raw.received_at, source="modbus", where=raw.meter_id, reason=reason, detail=detail,
                      payload=payload, meter_id=raw.meter_id)


__all__ = [
    "NO_TS",
    "SOURCES",
    "STATUSES",
    "STATUS_CODE",
    "FrameDecoder",
    "ReadingFrame",
    "SeriesTable",
    "decode_columns",
    "from_us",
    "to_us",
]
