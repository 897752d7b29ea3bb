"""IEC 61968-100 ResponseMessages with an IEC 61968-9 MeterReadings or EndDeviceEvents payload, written
as a stream of text pieces: a page of any size is never one string in memory.

Element order follows the 2011 XSDs (MeterReading: IntervalBlocks, Meter, Readings, UsagePoint;
Reading: reason, reportedDateTime, source, timeStamp, value, ReadingQualities, ReadingType)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

from api.cim.tables import CimTables
from gateway.model import Reading
from gateway.model.meters import Meter
from storage.records import ConsumptionBucket, StoredEvent

MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
READINGS_NS = "http://iec.ch/TC57/2011/MeterReadings#"
EVENTS_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
SOURCE = "meter-gateway"


@dataclass(frozen=True, slots=True)
class ReplyError:
    """One Reply/Error: a code (IEC 61968-100 Annex B style "x.y"), its level, what and where."""

    code: str
    reason: str
    level: str = "WARNING"  # INFORM | WARNING | FATAL | CATASTROPHIC
    details: str | None = None
    xpath: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    noun: str  # MeterReadings | EndDeviceEvents
    message_id: str
    created: datetime
    result: str = "OK"  # OK | PARTIAL | FAILED
    errors: Sequence[ReplyError] = ()
    correlation_id: str | None = None
    #: The cursor of the next page (a Header Property); None: this is the last one.
    next_cursor: str | None = None
    properties: Sequence[tuple[str, str]] = field(default_factory=tuple)


def text(value: float) -> str:
    """A reading's value as the meter shows it, in plain decimal notation (never 1e+16)."""
    return format(Decimal(repr(float(value))), "f")


def when(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: Characters XML 1.0 cannot carry at all, even escaped (a dead letter's detail may hold them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: str) -> str:
    return escape(_NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", value))


def _el(name: str, value: str) -> str:
    return f"<{name}>{_clean(value)}</{name}>"


def _names(prefix: str, name: str, kind: str) -> str:
    return (f"<{prefix}Names>{_el(prefix + 'name', name)}<{prefix}NameType>{_el(prefix + 'name', kind)}"
            f"</{prefix}NameType></{prefix}Names>")


def opening(env: Envelope, payload_ns: str) -> str:
    """The XML declaration, Header, Reply and the opening of the Payload."""
    props = list(env.properties)
    if env.next_cursor:
        props.append(("nextCursor", env.next_cursor))
    head = [_el("msg:Verb", "reply"), _el("msg:Noun", env.noun), _el("msg:Timestamp", when(env.created)),
            _el("msg:Source", SOURCE), _el("msg:MessageID", env.message_id)]
    if env.correlation_id:
        head.append(_el("msg:CorrelationID", env.correlation_id))
    head += [f"<msg:Property>{_el('msg:Name', k)}{_el('msg:Value', v)}</msg:Property>" for k, v in props]
    errors = "".join(
        f"<msg:Error>{_el('msg:code', e.code)}{_el('msg:level', e.level)}{_el('msg:reason', e.reason)}"
        + (_el("msg:details", e.details) if e.details else "") + (_el("msg:xpath", e.xpath) if e.xpath else "")
        + "</msg:Error>"
        for e in env.errors)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<msg:ResponseMessage xmlns:msg="{MESSAGE_NS}" xmlns:m="{payload_ns}">'
            f'<msg:Header>{"".join(head)}</msg:Header>'
            f'<msg:Reply>{_el("msg:Result", env.result)}{errors}</msg:Reply>')


def failed(env: Envelope) -> str:
    """A whole FAILED reply: no payload."""
    return opening(env, READINGS_NS if env.noun == "MeterReadings" else EVENTS_NS) + "</msg:ResponseMessage>\n"


PAYLOAD_OPEN = {"MeterReadings": "<msg:Payload><m:MeterReadings>", "EndDeviceEvents": "<msg:Payload><m:EndDeviceEvents>"}
PAYLOAD_CLOSE = {"MeterReadings": "</m:MeterReadings></msg:Payload></msg:ResponseMessage>\n",
                 "EndDeviceEvents": "</m:EndDeviceEvents></msg:Payload></msg:ResponseMessage>\n"}


@dataclass(frozen=True, slots=True)
class IntervalBlock:
    """Consumption buckets of one channel, one ReadingType."""

    reading_type: str
    buckets: Sequence[ConsumptionBucket]


def meter_reading(meter: Meter, usage_point: str | None, readings: Iterable[Reading], blocks: Sequence[IntervalBlock],
                  tables: CimTables, reasons: dict[tuple[str, float], str] | None = None) -> Iterator[str]:
    """One MeterReading: its interval blocks, the meter, its register reads (only channels the table
    names: the caller leaves the others out and says so), the usage point."""
    yield "<m:MeterReading>"
    for block in blocks:
        yield "<m:IntervalBlocks>"
        for b in block.buckets:
            if b.value is None:
                continue
            codes = (["3.8.0"] if b.estimated else []) + (["3.5.258"] if b.suspect else [])
            quality = "".join(f'<m:ReadingQualities><m:ReadingQualityType ref="{c}"/></m:ReadingQualities>'
                              for c in codes)
            yield (f"<m:IntervalReadings>{_el('m:timeStamp', when(b.end))}{_el('m:value', text(b.value))}{quality}"
                   f"<m:timePeriod>{_el('m:end', when(b.end))}{_el('m:start', when(b.start))}</m:timePeriod>"
                   "</m:IntervalReadings>")
        yield f"<m:ReadingType ref={quoteattr(block.reading_type)}/></m:IntervalBlocks>"
    ids = _names("m:", meter.meter_id, "MeterNumber")
    if meter.device_number:
        ids += _names("m:", meter.device_number, "DeviceNumber")
    yield f"<m:Meter>{_el('m:mRID', meter.meter_id)}{ids}</m:Meter>"
    types = tables.register_types
    for r in readings:
        reading_type = types.get(r.channel)
        if reading_type is None:
            continue
        parts = ["<m:Readings>"]
        reason = reasons.get((r.channel.value, r.ts.timestamp())) if reasons else None
        if reason:
            parts.append(_el("m:reason", reason))
        if r.received_at is not None:
            parts.append(_el("m:reportedDateTime", when(r.received_at)))
        parts += [_el("m:source", r.source.value), _el("m:timeStamp", when(r.ts)), _el("m:value", text(r.value))]
        parts += [f"<m:ReadingQualities><m:ReadingQualityType ref={quoteattr(code)}/></m:ReadingQualities>"
                  for code in tables.qualities(r.status, int(r.quality))]
        parts.append(f"<m:ReadingType ref={quoteattr(reading_type)}/></m:Readings>")
        yield "".join(parts)
    if usage_point:
        yield (f"<m:UsagePoint>{_el('m:mRID', usage_point)}{_names('m:', usage_point, 'ConsumerNumber')}"
               "</m:UsagePoint>")
    yield "</m:MeterReading>"


def end_device_event(stored: StoredEvent, meter: Meter | None, event_type: str) -> str:
    """One EndDeviceEvent: mRID (the store's event seq), createdDateTime, severity, the meter as its
    asset, the detail as a name/value pair, its type."""
    e = stored.event
    asset = f"<m:Assets>{_el('m:mRID', e.meter_id)}</m:Assets>" if e.meter_id else ""
    usage = (f"<m:UsagePoint>{_el('m:mRID', meter.consumer_number)}</m:UsagePoint>"
             if meter is not None and meter.consumer_number else "")
    return (f"<m:EndDeviceEvent>{_el('m:mRID', str(stored.seq))}{_el('m:createdDateTime', when(e.ts))}"
            f"{_el('m:reason', e.kind.value)}{_el('m:severity', e.severity.value)}{asset}"
            f"<m:EndDeviceEventDetails>{_el('m:name', 'detail')}{_el('m:value', e.detail)}</m:EndDeviceEventDetails>"
            f"<m:EndDeviceEventType ref={quoteattr(event_type)}/>{usage}</m:EndDeviceEvent>")
