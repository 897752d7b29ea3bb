"""The register decoder: many `RawRegisters` of one device profile -> one `ReadingFrame`, without a
Python loop per value.

`FrameDecoder` decodes a batch of polls at once: the words of a block are stacked into a 2-D
uint16 array, and the registers held alike (one type, one byte order) are gathered and read
through one byte-order-aware `view` (e.g. ``>f4``), so a batch costs a few array operations per
kind of register, whatever its number of polls or registers. A value outside its channel's
physical range (`normalise/plausibility.py`) is a dead letter, as a NaN is.

The frame types are vocabulary (`gateway.model.frame`, re-exported here for old imports): the
pipeline decodes every pass of polls here, validates the frame, and makes Reading objects
(`to_readings`) only for the spool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from gateway.model import DeadLetter, Event, EventKind, Quality, Severity
from gateway.model.frame import (
    F64,
    I64,
    NO_TS,
    SOURCES,
    STATUS_CODE,
    STATUSES,
    B,
    ReadingFrame,
    SeriesTable,
    from_us,
    to_us,
    us_column,
)
from gateway.model.profiles import ByteOrder, DeviceFlag, DeviceProfile, RegisterSpec
from gateway.model.readings import Kind
from gateway.model.samples import RawRegisters
from gateway.model.shown import Exact, Rounding, arithmetic_decimals, exact_of, rounding_of, shown_columns
from gateway.model.units import conversion_factor
from gateway.normalise.normaliser import poll_dead_letter, register_value
from gateway.normalise.plausibility import CHANNEL_LIMITS, Limits, limits_of
from gateway.normalise.registers import NUMPY_TYPE

# numpy dtype of each register type, read big-endian once the words are in ABCD byte order.
_FLAG_QUALITY: dict[DeviceFlag, Quality] = {DeviceFlag.TAMPER: Quality.TAMPER, DeviceFlag.RELAY_OPEN: Quality.RELAY_OPEN}


def decode_columns(words: npt.NDArray[np.uint16], spec: RegisterSpec) -> npt.NDArray[np.generic]:
    """The numbers held by `words` (one row per poll, spec.words columns, as received), before scale.

    Reordering to ABCD is a column reversal (low word first) and a choice of byte storage
    (bytes swapped within a word), then one view as a big-endian numpy type.
    """
    cols = words[:, ::-1] if spec.order in (ByteOrder.CDAB, ByteOrder.DCBA) else words
    storage = "<u2" if spec.order in (ByteOrder.BADC, ByteOrder.DCBA) else ">u2"
    raw: npt.NDArray[np.generic] = np.ascontiguousarray(cols, dtype=storage).view(NUMPY_TYPE[spec.type]).reshape(-1)
    return raw


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each register of a profile sits in one poll's flattened words."""

    columns: tuple[int | None, ...]  # per RegisterSpec: first word, None if not read
    flag_columns: tuple[int | None, ...]  # per FlagSpec


Shape = list[tuple[int, int, int]]  # (function code, address, count) of each block a poll read


def _shape(raw: RawRegisters) -> Shape:
    return [(b.function, b.address, len(b.words)) for b in raw.blocks]


def _layout(profile: DeviceProfile, blocks: Shape) -> _Layout:
    starts, pos = [], 0
    for _, _, count in blocks:
        starts.append(pos)
        pos += count

    def column(function: int, address: int, words: int) -> int | None:
        # The first block that holds the register, as the Normaliser's `place` picks it.
        for (fc, start, count), first in zip(blocks, starts, strict=True):
            if fc == function and start <= address and address + words <= start + count:
                return first + address - start
        return None

    return _Layout(tuple(column(s.function.code, s.address, s.words) for s in profile.registers),
                   tuple(column(f.function.code, f.address, 1) for f in profile.flags))


@dataclass(frozen=True, slots=True)
class _Group:
    """The registers of a profile held alike (one numpy type, one byte storage): one gather of
    their words, one view, and one multiply-add for all of them, whatever their number."""

    positions: list[int]  # index of each register in profile.registers
    gather: I64  # word columns, register after register, each register's words in ABCD order
    storage: str  # byte order the words are stored in before the view
    np_type: str
    scale: F64
    offset: F64
    factor: F64
    markers: tuple[tuple[int, int], ...]  # (index in the group, raw "not available" value)
    limits: tuple[F64, F64]  # per register: its channel's physical range ([plausibility.channels])
    everything: bool  # the group is every register of the profile, in order
    decimals: Rounding | None  # the registers scale, offset and factor add decimals to (model.shown)
    exact: Exact | None  # scale x factor as exact decimals, when that path applies (model.shown)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How the polls of one profile that read one set of blocks are decoded; made once per
    (profile, blocks), so a decode costs a few array operations per group of registers
    rather than per register (a pass of a handful of polls costs little more than its polls)."""

    layout: _Layout
    groups: tuple[_Group, ...]
    missing: tuple[int, ...]  # registers the blocks do not hold
    cumulative: B  # (1, registers): whether each register is cumulative
    factors: tuple[float, ...]  # per register: device unit -> canonical unit


def _plan(profile: DeviceProfile, shape: Shape, limits: Limits) -> _Plan:
    layout = _layout(profile, shape)
    factors = tuple(conversion_factor(spec.unit, spec.channel) for spec in profile.registers)
    alike: dict[tuple[str, str], list[int]] = {}
    for j, (spec, col) in enumerate(zip(profile.registers, layout.columns, strict=True)):
        if col is not None:
            storage = "<u2" if spec.order in (ByteOrder.BADC, ByteOrder.DCBA) else ">u2"
            alike.setdefault((NUMPY_TYPE[spec.type], storage), []).append(j)
    groups = []
    for (np_type, storage), positions in alike.items():
        gather: list[int] = []
        markers: list[tuple[int, int]] = []
        for p, j in enumerate(positions):
            spec, col = profile.registers[j], layout.columns[j]
            assert col is not None
            cols = range(col, col + spec.words)
            # Low word first (CDAB, DCBA): reversing the words gives ABCD (or BADC) order.
            gather += reversed(cols) if spec.order in (ByteOrder.CDAB, ByteOrder.DCBA) else cols
            if spec.not_available is not None:
                markers.append((p, spec.not_available))
        specs = [profile.registers[j] for j in positions]
        added = [arithmetic_decimals(s.scale, s.offset, factors[j]) for s, j in zip(specs, positions, strict=True)]
        decimals = None if np_type == ">f8" else rounding_of(added)
        exact = None if np_type == ">f8" else exact_of([s.scale for s in specs], [s.offset for s in specs],
                                                         [factors[j] for j in positions])
        groups.append(_Group(positions, np.asarray(gather, dtype=np.int64), storage, np_type,
                             np.asarray([s.scale for s in specs], dtype=np.float64),
                             np.asarray([s.offset for s in specs], dtype=np.float64),
                             np.asarray([factors[j] for j in positions], dtype=np.float64), tuple(markers),
                             limits_of([s.channel for s in specs], limits),
                             positions == list(range(len(profile.registers))), decimals, exact))
    return _Plan(layout, tuple(groups), tuple(j for j, col in enumerate(layout.columns) if col is None),
                 np.asarray([[s.kind is Kind.CUMULATIVE for s in profile.registers]], dtype=bool), factors)


def _stacked(group: Sequence[RawRegisters], shape: Shape) -> npt.NDArray[np.uint16] | None:
    """The words of every poll as one (polls, words) array; None if a poll read other blocks
    than `shape` (then the words of a row would not line up with the layout)."""
    n = len(group)
    blocks = [b for r in group for b in r.blocks]
    if len(blocks) != n * len(shape):
        return None
    functions, addresses, counts = [f for f, _, _ in shape], [a for _, a, _ in shape], [c for _, _, c in shape]
    if [b.address for b in blocks] != addresses * n or [b.function for b in blocks] != functions * n or \
            [len(b.words) for b in blocks] != counts * n:
        return None
    flat = np.fromiter(chain.from_iterable(b.words for b in blocks), dtype=np.uint16, count=n * sum(counts))
    return flat.reshape(n, -1)


@dataclass(slots=True)
class _Found:
    """Dead letters and events of one `decode`, each with the position of its poll in the batch,
    so they come out poll by poll in the order `Normaliser.registers` gives them."""

    dead: list[tuple[int, DeadLetter]] = field(default_factory=list)
    events: list[tuple[int, Event]] = field(default_factory=list)

    def in_poll_order(self) -> tuple[list[DeadLetter], list[Event]]:
        # A stable sort: within one poll, the order they were found in (flags, then registers).
        return ([d for _, d in sorted(self.dead, key=itemgetter(0))] if self.dead else [],
                [e for _, e in sorted(self.events, key=itemgetter(0))] if self.events else [])


class FrameDecoder:
    """RawRegisters of many polls -> one ReadingFrame (+ dead letters, + tamper events).

    Same results as `Normaliser.registers` poll by poll (tests hold them together), at a cost
    of a few numpy operations per (profile, register) instead of per value: the pipeline's
    decoder. One decoder serves every profile (series ids are cached per profile and meter).
    Dead letters and events come in poll order, as one poll after another through the
    Normaliser would give them.
    """

    def __init__(self, profiles: Mapping[str, DeviceProfile], series: SeriesTable, limits: Limits = CHANNEL_LIMITS
                 ) -> None:
        self._profiles, self._limits = profiles, limits  # limits: each channel's physical range
        self.series = series
        self._ids: dict[str, dict[str, int]] = {}  # profile name -> meter_id -> row in _id_rows
        self._id_rows: dict[str, list[list[int]]] = {}
        self._id_arrays: dict[str, I64] = {}
        self._tampered: set[str] = set()  # meters whose tamper flag is up
        #: (id(profile), blocks) -> (profile, plan); the profile is kept so its id stays its own.
        self._plans: dict[tuple[int, tuple[tuple[int, int, int], ...]], tuple[DeviceProfile, _Plan]] = {}

    def _plan(self, profile: DeviceProfile, shape: Shape) -> _Plan:
        key = (id(profile), tuple(shape))
        cached = self._plans.get(key)
        if cached is None or cached[0] is not profile:
            cached = self._plans[key] = (profile, _plan(profile, shape, self._limits))
        return cached[1]

    def decode(self, raws: Sequence[RawRegisters]) -> tuple[ReadingFrame, list[DeadLetter], list[Event]]:
        found = _Found()
        meters = [raw.meter_id for raw in raws]
        profiles = list(map(self._profiles.get, meters))
        if profiles and profiles[0] is not None and profiles.count(profiles[0]) == len(profiles):
            # One profile for the whole batch: the usual case.
            frames = [self._decode_group(profiles[0], list(raws), list(range(len(raws))), found, meters)]
        else:
            groups: dict[str, tuple[DeviceProfile, list[RawRegisters], list[int]]] = {}
            for i, (raw, profile) in enumerate(zip(raws, profiles, strict=True)):
                if profile is None:
                    found.dead.append((i, poll_dead_letter(raw, "unknown_meter", "no profile configured for this meter")))
                    continue
                group = groups.get(profile.name)
                if group is None:
                    group = groups[profile.name] = (profile, [], [])
                group[1].append(raw)
                group[2].append(i)
            frames = [self._decode_group(profile, group, at, found) for profile, group, at in groups.values()]
        if len(frames) == 1:
            frame = frames[0]
        else:
            frames = [f for f in frames if len(f)]
            frame = frames[0] if frames else ReadingFrame.empty()
            for other in frames[1:]:
                frame = frame.concat(other)
        return frame, *found.in_poll_order()

    def _series_ids(self, profile: DeviceProfile, meters: list[str]) -> I64:
        """(n polls, n registers) series ids, cached per meter."""
        rows = self._ids.setdefault(profile.name, {})
        table = self._id_rows.setdefault(profile.name, [])
        try:
            at = np.fromiter(map(rows.__getitem__, meters), dtype=np.int64, count=len(meters))
        except KeyError:  # meters seen for the first time: ids in the order they came
            channels = [spec.channel for spec in profile.registers]
            for m in dict.fromkeys(meters).keys() - rows.keys():
                rows[m] = len(table)
                table.append(self.series.ids(m, channels))
            self._id_arrays.pop(profile.name, None)
            at = np.fromiter(map(rows.__getitem__, meters), dtype=np.int64, count=len(meters))
        ids = self._id_arrays.get(profile.name)
        if ids is None:
            ids = self._id_arrays[profile.name] = np.asarray(table, dtype=np.int64).reshape(len(table), -1)
        return ids[at]

    def _decode_group(self, profile: DeviceProfile, group: list[RawRegisters], at: list[int], found: _Found,
                      meters: list[str] | None = None) -> ReadingFrame:
        """Polls of one profile; `at` is each poll's position in the batch."""
        shape = _shape(group[0])
        words = _stacked(group, shape)
        if words is None:
            # Polls of one profile read the same blocks; if not, decode them one layout at a time.
            like = [i for i, r in enumerate(group) if _shape(r) == shape]
            rest = [i for i, r in enumerate(group) if _shape(r) != shape]
            frame = self._decode_group(profile, [group[i] for i in like], [at[i] for i in like], found)
            return frame.concat(self._decode_group(profile, [group[i] for i in rest], [at[i] for i in rest], found))
        n = len(group)
        plan = self._plan(profile, shape)
        # The only per-poll Python: pulling the fields out; everything after works on arrays.
        meters = meters if meters is not None else [r.meter_id for r in group]
        stamps: dict[int, datetime] = {}
        ts = us_column([r.ts for r in group], stamps)
        received = us_column([r.received_at for r in group], stamps)
        quality = self._flags(profile, plan.layout, words, group, at, meters, found)
        ids = self._series_ids(profile, meters)
        k = len(profile.registers)
        values: F64 = np.empty((n, k), dtype=np.float64)
        # (poll, register) of each value that is no storable number, or was not read.
        odd: list[tuple[int, int]] = [(i, j) for j in plan.missing for i in range(n)]
        sources = 1 if plan.missing else 0  # lists of them so far, each in (poll, register) order
        # Garbage words decode to NaN (signalling ones too) or overflow: the same arithmetic as
        # the Normaliser's, in the same order, so the floats are identical.
        with np.errstate(invalid="ignore", over="ignore"):
            for g in plan.groups:
                raw = np.ascontiguousarray(words[:, g.gather], dtype=g.storage).view(g.np_type)  # (polls, group)
                v = shown_columns(raw, g.scale, g.offset, g.factor, g.decimals, g.exact)  # as the meter shows them
                unusable = ~((v >= g.limits[0]) & (v <= g.limits[1]))  # NaN, or beyond the channel's physics
                for p, marker in g.markers:
                    unusable[:, p] |= raw[:, p] == marker
                if g.everything:  # the usual profile: one group, every register in order
                    values = v
                else:
                    values[:, g.positions] = v
                if b"\1" in unusable.tobytes():  # a bytes search: ndarray.any() costs two ufunc calls
                    odd += [(i, g.positions[p]) for i, p in np.argwhere(unusable).tolist()]
                    sources += 1
        if sources > 1:
            odd.sort()
        keep = self._odd_values(profile, plan, words, values, odd, group, at, found) if odd else None
        # ndarray methods, not np.repeat / np.tile: no Python wrapper per call.
        frame = ReadingFrame.build(ids.reshape(-1), ts.repeat(k), values.reshape(-1),
                                   plan.cumulative.repeat(n, axis=0).reshape(-1), quality=quality.repeat(k),
                                   received=received.repeat(k), source=RawRegisters.SOURCE)
        frame.stamps = stamps
        return frame if keep is None or keep.all() else frame.take(keep.reshape(-1))

    def _odd_values(self, profile: DeviceProfile, plan: _Plan, words: npt.NDArray[np.uint16], values: F64,
                    odd: list[tuple[int, int]], group: list[RawRegisters], at: list[int], found: _Found) -> B:
        """Settle the few values the arrays could not: registers not read, and words that decode
        to no storable number. `odd` is (poll, register), sorted: a poll's dead letters come in
        register order, as the Normaliser gives them. Returns which values are kept."""
        keep = np.ones(values.shape, dtype=bool)
        dropped: tuple[list[int], list[int]] = ([], [])
        settled: tuple[list[int], list[int], list[float]] = ([], [], [])
        rows: dict[int, list[int]] = {}  # words of a poll as a list, made once per poll
        for i, j in odd:
            spec, col = profile.registers[j], plan.layout.columns[j]
            if col is None:
                detail = f"{spec.channel.value}: register {spec.function.value} {spec.address:#06x} was not read"
                found.dead.append((at[i], poll_dead_letter(group[i], "missing_register", detail)))
                dropped[0].append(i)
                dropped[1].append(j)
                continue
            row = rows.get(i)
            if row is None:
                row = rows[i] = words[i].tolist()
            # The Normaliser's own decoding, one by one: it decides (e.g. a float that only
            # rounds to the marker is a value) and words the dead letter.
            value = register_value(group[i], spec, row[col:col + spec.words], plan.factors[j], self._limits)
            if isinstance(value, DeadLetter):
                found.dead.append((at[i], value))
                dropped[0].append(i)
                dropped[1].append(j)
            else:
                settled[0].append(i)
                settled[1].append(j)
                settled[2].append(value)
        keep[dropped] = False
        values[settled[:2]] = settled[2]
        return keep

    def _flags(self, profile: DeviceProfile, layout: _Layout, words: npt.NDArray[np.uint16],
               group: list[RawRegisters], at: list[int], meters: list[str], found: _Found) -> I64:
        """Quality bits the devices report in their status registers, one per poll."""
        quality = np.zeros(len(group), dtype=np.int64)
        for flag, col in zip(profile.flags, layout.flag_columns, strict=True):
            if col is None:
                detail = f"{flag.flag.value} flag: register {flag.function.value} {flag.address:#06x} was not read"
                found.dead.extend((i, poll_dead_letter(r, "missing_register", detail)) for i, r in zip(at, group, strict=True))
                continue
            raised = ((words[:, col] >> flag.bit) & 1).astype(bool) == flag.active
            quality[raised] |= int(_FLAG_QUALITY[flag.flag])
        if profile.flags:
            self._tamper_events((quality & int(Quality.TAMPER)) != 0, group, at, meters, found)
        return quality

    def _tamper_events(self, tampered: B, group: list[RawRegisters], at: list[int], meters: list[str],
                       found: _Found) -> None:
        """One TAMPER event when a meter starts reporting it, not one per poll while it lasts.

        A meter can be polled more than once in a batch (a backlog), so its polls are taken in
        order; only polls of meters that are or become tampered can change anything."""
        flagged = np.flatnonzero(tampered).tolist()
        watch = self._tampered.union(meters[i] for i in flagged)
        if not watch:
            return
        watched = np.fromiter(map(watch.__contains__, meters), dtype=bool, count=len(meters))
        for i in np.flatnonzero(watched).tolist():
            meter = meters[i]
            if not tampered[i]:
                self._tampered.discard(meter)
            elif meter not in self._tampered:
                raw = group[i]
                found.events.append((at[i], Event(raw.ts, meter, EventKind.TAMPER, Severity.WARNING,
                                                  "the meter reports tamper in its status register")))
                self._tampered.add(meter)


__all__ = [
    "NO_TS", "SOURCES", "STATUSES", "STATUS_CODE", "FrameDecoder", "ReadingFrame", "SeriesTable",
    "decode_columns", "from_us", "to_us",
]
