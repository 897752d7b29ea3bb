"""A consumer's Green Button (NAESB ESPI) Atom feed: LocalTimeParameters, then per usage point (a
meter while assigned to the consumer) its UsagePoint, MeterReading, ReadingType and one
IntervalBlock per day of hourly consumption, written as text pieces (one day of one meter at a time).

Every entry has a unique urn:uuid id and self/up links; each UsagePoint is related to its MeterReading
and to the LocalTimeParameters, each MeterReading to its ReadingType and its IntervalBlocks, as the
Green Button Alliance's function block 1 asks. Values are integers (ESPI's Int48) in Wh or m³ times
10^powerOfTenMultiplier, chosen so that the decimals the meter shows are kept exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from gateway.model.meters import Utility
from storage.boundary import estimate_method
from storage.records import ConsumptionBucket

ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"
_IDS = uuid.UUID("6f1d8f0e-7c53-4b55-9e0c-1f7c9a4d2b10")  # the namespace of this gateway's entry ids
#: ESPI ServiceKind, CommodityKind, MeasurementKind and UnitSymbolKind (Wh 72, m3 42) per utility.
_SERVICE = {Utility.ELECTRICITY: 0, Utility.GAS: 1, Utility.WATER: 2, Utility.HEAT: 4}
_COMMODITY = {Utility.ELECTRICITY: 1, Utility.GAS: 7, Utility.WATER: 9, Utility.HEAT: 12}
_KIND = {Utility.ELECTRICITY: 12, Utility.GAS: 58, Utility.WATER: 58, Utility.HEAT: 12}
_UOM = {Utility.ELECTRICITY: 72, Utility.GAS: 42, Utility.WATER: 42, Utility.HEAT: 72}
#: Our canonical unit -> ESPI's: kWh are written in Wh (x1000), m3 as m3.
_TO_UOM = {Utility.ELECTRICITY: 1000, Utility.GAS: 1, Utility.WATER: 1, Utility.HEAT: 1000}
#: ESPI QualityOfReading: validated, estimated using a reference day, by linear interpolation, questionable.
VALIDATED, LIKE_DAY, LINEAR, QUESTIONABLE = 17, 8, 9, 10
#: North American DST rule words (second Sunday of March / first Sunday of November, 02:00), as the
#: Green Button Alliance's example feed writes them; other zones' rules are not encoded (see local_time).
_NORTH_AMERICA = ("360E2000", "B40E2000")
#: usage.xsd's DstRuleType: all ones is "no rule" (a zone without daylight saving time).
_DISABLED = "FFFFFFFF"


@dataclass(frozen=True, slots=True)
class UsagePoint:
    """One meter while assigned to the consumer: its share of the window and its hourly consumption."""

    meter_id: str
    utility: Utility
    start: datetime
    end: datetime
    buckets: Sequence[ConsumptionBucket]


def entry_id(href: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_IDS, href)}"


def when(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def epoch(ts: datetime) -> int:
    return int(ts.timestamp())


def multiplier(point: UsagePoint) -> int:
    """The powerOfTenMultiplier that turns every value of a usage point into an integer exactly."""
    digits = 0
    for b in point.buckets:
        if b.value is not None:
            exponent = (Decimal(repr(float(b.value))) * _TO_UOM[point.utility]).normalize().as_tuple().exponent
            if isinstance(exponent, int):
                digits = max(digits, -exponent)
    return -digits


def quality(b: ConsumptionBucket) -> int:
    reads = [r for r in (b.first_read, b.last_read) if r is not None]
    if b.estimated:
        methods = {estimate_method(r) for r in reads} - {None}
        # "profile": like-day estimates stored before the method had its name.
        return LIKE_DAY if methods and methods <= {"like_day", "profile"} else LINEAR
    if b.suspect or any(r.status.value in ("suspect", "rejected") for r in reads):
        return QUESTIONABLE
    return VALIDATED


def local_time(zone: str, at: datetime) -> tuple[int, int, str, str]:
    """(tzOffset, dstOffset, dstStartRule, dstEndRule) of an IANA zone in the year of `at`: the standard
    offset and the DST shift are exact; rule words are FFFFFFFF (no rule) for a zone without DST and those
    of North America where the zone follows its rule; other zones' rules are not encoded yet (00000000;
    interval starts are UTC epochs, so no value depends on them)."""
    tz = ZoneInfo(zone)
    year = at.year
    jan, jul = datetime(year, 1, 15, tzinfo=tz), datetime(year, 7, 15, tzinfo=tz)
    offsets = sorted(int((d.utcoffset() or timedelta()).total_seconds()) for d in (jan, jul))
    standard, dst = offsets[0], offsets[1] - offsets[0]
    if dst == 0:
        return standard, 0, _DISABLED, _DISABLED
    march = [datetime(year, 3, d, 12, tzinfo=tz) for d in range(1, 32)]
    starts = next((d.day for d in march if (d.utcoffset() or timedelta()).total_seconds() != standard), None)
    second_sunday = next(d.day for d in march if d.weekday() == 6 and d.day > 7)
    rules = _NORTH_AMERICA if starts == second_sunday + 1 or starts == second_sunday else ("00000000", "00000000")
    return standard, dst, rules[0], rules[1]


def _link(rel: str, href: str, kind: str) -> str:
    return f"<link rel={quoteattr(rel)} href={quoteattr(href)} type={quoteattr(kind)}/>"


def _entry(href: str, up: str, kind: str, title: str, related: Sequence[tuple[str, str]], content: str,
           now: datetime) -> str:
    links = _link("self", href, f"espi-entry/{kind}") + _link("up", up, f"espi-feed/{kind}")
    links += "".join(_link("related", h, k) for h, k in related)
    stamp = when(now)
    return (f"<entry><id>{entry_id(href)}</id>{links}<title>{escape(title)}</title>"
            f"<content>{content}</content><published>{stamp}</published><updated>{stamp}</updated></entry>")


def feed(consumer: str, points: Sequence[UsagePoint], *, zone: str, now: datetime, base: str) -> Iterator[str]:
    """The whole feed as text pieces; `base` is the resource path prefix (/espi/1_1/resource)."""
    customer = f"{base}/RetailCustomer/{consumer}"
    ltp = f"{base}/LocalTimeParameters/1"
    start = min((p.start for p in points), default=now)
    tz_offset, dst_offset, dst_start, dst_end = local_time(zone, start)
    yield ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<feed xmlns="{ATOM_NS}"><id>{entry_id(customer + "/feed/" + when(now))}</id>'
           f"<title>Green Button Download My Data: {escape(consumer)}</title><updated>{when(now)}</updated>"
           + _link("self", f"{customer}/UsagePoint", "espi-feed/UsagePoint"))
    yield _entry(ltp, f"{base}/LocalTimeParameters", "LocalTimeParameters", zone, [],
                 f'<LocalTimeParameters xmlns="{ESPI_NS}"><dstEndRule>{dst_end}</dstEndRule>'
                 f"<dstOffset>{dst_offset}</dstOffset><dstStartRule>{dst_start}</dstStartRule>"
                 f"<tzOffset>{tz_offset}</tzOffset></LocalTimeParameters>", now)
    for n, p in enumerate(points, start=1):
        power = multiplier(p)
        up_href = f"{customer}/UsagePoint/{n}"
        mr_href = f"{up_href}/MeterReading/1"
        rt_href = f"{base}/ReadingType/{n}"
        blocks = f"{mr_href}/IntervalBlock"
        yield _entry(up_href, f"{customer}/UsagePoint", "UsagePoint", p.meter_id,
                     [(f"{up_href}/MeterReading", "espi-feed/MeterReading"), (ltp, "espi-entry/LocalTimeParameters")],
                     f'<UsagePoint xmlns="{ESPI_NS}"><ServiceCategory><kind>{_SERVICE[p.utility]}</kind>'
                     "</ServiceCategory></UsagePoint>", now)
        yield _entry(mr_href, f"{up_href}/MeterReading", "MeterReading", f"{p.meter_id} hourly consumption",
                     [(blocks, "espi-feed/IntervalBlock"), (rt_href, "espi-entry/ReadingType")],
                     f'<MeterReading xmlns="{ESPI_NS}"/>', now)
        yield _entry(rt_href, f"{base}/ReadingType", "ReadingType", "Hourly consumption", [],
                     f'<ReadingType xmlns="{ESPI_NS}"><accumulationBehaviour>4</accumulationBehaviour>'
                     f"<commodity>{_COMMODITY[p.utility]}</commodity><dataQualifier>12</dataQualifier>"
                     "<flowDirection>1</flowDirection><intervalLength>3600</intervalLength>"
                     f"<kind>{_KIND[p.utility]}</kind><powerOfTenMultiplier>{power}</powerOfTenMultiplier>"
                     f"<timeAttribute>0</timeAttribute><uom>{_UOM[p.utility]}</uom></ReadingType>", now)
        yield from _blocks(p, blocks, power, now)
    yield "</feed>\n"


def _blocks(p: UsagePoint, href: str, power: int, now: datetime) -> Iterator[str]:
    """One IntervalBlock per UTC day that has consumption."""
    scale = Decimal(_TO_UOM[p.utility]).scaleb(-power)
    by_day: dict[datetime, list[ConsumptionBucket]] = {}
    for b in p.buckets:
        if b.value is not None:
            day = b.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            by_day.setdefault(day, []).append(b)
    for day, buckets in sorted(by_day.items()):
        readings = "".join(
            f"<IntervalReading><ReadingQuality><quality>{quality(b)}</quality></ReadingQuality>"
            f"<timePeriod><duration>{epoch(b.end) - epoch(b.start)}</duration><start>{epoch(b.start)}</start>"
            f"</timePeriod><value>{int(Decimal(repr(float(b.value or 0))) * scale)}</value></IntervalReading>"
            for b in buckets)
        first, last = buckets[0].start, buckets[-1].end
        block = f"{href}/{epoch(day)}"
        yield _entry(block, href, "IntervalBlock", "", [],
                     f'<IntervalBlock xmlns="{ESPI_NS}"><interval><duration>{epoch(last) - epoch(first)}</duration>'
                     f"<start>{epoch(first)}</start></interval>{readings}</IntervalBlock>", now)
