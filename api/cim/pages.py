"""Which readings and events a CIM document of one page holds: the meters (by meter number or by a
consumer's assignments, each in its own window), a page of readings in (meter, ts, channel) order with
the cursor of the next one, and the interval blocks of a meter's first page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from api.cim.documents import IntervalBlock, ReplyError
from api.cim.tables import CimTables
from api.deps import ApiStore
from api.pagination import decode_cursor, encode_cursor
from gateway.errors import InvalidRequest, NotFound
from gateway.model import Channel, Reading
from gateway.model.meters import Meter
from gateway.model.readings import CUMULATIVE_CHANNELS

#: Readings asked of the store at once while a page fills.
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Target:
    """A meter and the window of it a document covers (a consumer's share of it, for a consumer)."""

    meter: Meter
    usage_point: str | None
    start: datetime
    end: datetime


@dataclass(slots=True)
class Section:
    target: Target
    readings: list[Reading]
    blocks: list[IntervalBlock]
    #: The reason of each reading a special read took, by (channel, ts as a POSIX time).
    reasons: dict[tuple[str, float], str] = field(default_factory=dict)


async def targets_of(store: ApiStore, meters: Sequence[str], consumers: Sequence[str], start: datetime,
                     end: datetime) -> list[Target]:
    """The meters asked for, in the order given, or consumers' meters while assigned to them (by
    consumer, then start)."""
    if bool(meters) == bool(consumers):
        msg = "give either meter (one or more) or consumer"
        raise InvalidRequest(msg)
    found: list[Target] = []
    for consumer in dict.fromkeys(consumers):
        if await store.get_consumer(consumer) is None:
            raise NotFound("consumer", consumer)
        for a in await store.assignments(consumer_number=consumer, reads=False):
            lo, hi = max(start, a.start), min(end, a.end) if a.end is not None else end
            meter = await store.get_meter(a.meter_id)
            if lo < hi and meter is not None:
                found.append(Target(meter, consumer, lo, hi))
    if consumers:
        return found
    out = []
    for meter_id in dict.fromkeys(meters):
        meter = await store.get_meter(meter_id)
        if meter is None:
            raise NotFound("meter", meter_id)
        out.append(Target(meter, meter.consumer_number, start, end))
    return out


async def fill(store: ApiStore, targets: Sequence[Target], *, channels: frozenset[Channel] | None, limit: int,
               cursor: str | None, tables: CimTables, intervals: str | None, now: datetime
               ) -> tuple[list[Section], str | None, list[ReplyError]]:
    """One page: at most `limit` readings from the cursor on, the next page's cursor (None: done),
    and the warnings of a PARTIAL reply (channels with no ReadingType, left out). `channels`: only
    these (None: all)."""
    channel = next(iter(channels)) if channels is not None and len(channels) == 1 else None
    index, after = (0, None) if not cursor else _position(cursor, targets)
    sections: list[Section] = []
    unmapped: set[str] = set()
    budget = limit
    for i in range(index, len(targets)):
        target = targets[i]
        section = Section(target, [], [])
        for read in await store.special_reads(target.meter.meter_id, start=target.start, end=target.end):
            if read.ts is not None:
                section.reasons.update({(c.value, read.ts.timestamp()): read.reason.value for c, _ in read.values})
        if after is None and intervals:
            section.blocks = await _blocks(store, target, channels, tables, intervals, now)
        sections.append(section)
        while True:
            want = min(budget, CHUNK)
            rows = await store.readings(target.meter.meter_id, start=target.start, end=target.end, channel=channel,
                                        limit=want + 1, after=after)
            taken = rows[:want]
            for r in taken:
                if channels is not None and r.channel not in channels:
                    continue
                if r.channel in tables.register_types:
                    section.readings.append(r)
                else:
                    unmapped.add(r.channel.value)
            budget -= len(taken)
            if len(rows) <= want:  # this meter's window is done
                break
            last = taken[-1]
            if budget == 0:
                return sections, _cursor(target, (last.ts, last.channel.value)), _warnings(unmapped)
            after = (last.ts, last.channel.value)
        after = None
        if budget == 0 and i + 1 < len(targets):
            return sections, _cursor(targets[i + 1], None), _warnings(unmapped)
    return sections, None, _warnings(unmapped)


def _cursor(target: Target, after: tuple[datetime, str] | None) -> str:
    """Where the next page starts: the meter and its window's start (not a position in the list, which a
    move-in between two pages would shift), and the last (ts, channel) read of it, if any."""
    return encode_cursor([target.meter.meter_id, target.start.isoformat(),
                          after[0].isoformat() if after else None, after[1] if after else None])


def _position(cursor: str, targets: Sequence[Target]) -> tuple[int, tuple[datetime, str] | None]:
    wrong = InvalidRequest("cursor does not belong to this query (or its meters' assignments changed since: "
                           "start again without a cursor)")
    meter_id, start, ts, channel = decode_cursor(cursor, 4)
    index = next((i for i, t in enumerate(targets)
                  if t.meter.meter_id == meter_id and t.start.isoformat() == start), None)
    if index is None:
        raise wrong
    if ts is None:
        return index, None
    try:
        at = datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or not isinstance(channel, str):
        raise wrong
    return index, (at, channel)


def _warnings(unmapped: set[str]) -> list[ReplyError]:
    if not unmapped:
        return []
    names = ", ".join(sorted(unmapped))
    return [ReplyError("1.1", f"no ReadingType for channel(s) {names}: their readings are left out",
                       details="add them to reading_types.toml in the folder [api] cim_tables names")]


async def _blocks(store: ApiStore, target: Target, channels: frozenset[Channel] | None, tables: CimTables,
                  bucket: str, now: datetime) -> list[IntervalBlock]:
    types = tables.interval_types.get(bucket, {})
    blocks = []
    for c in types:
        if c not in CUMULATIVE_CHANNELS or (channels is not None and c not in channels):
            continue
        buckets = await store.consumption(target.meter.meter_id, c, start=target.start, end=min(target.end, now),
                                          bucket=bucket, now=now) if target.start < now else []
        kept = [b for b in buckets if b.value is not None]
        if kept:
            blocks.append(IntervalBlock(types[c], kept))
    return blocks
