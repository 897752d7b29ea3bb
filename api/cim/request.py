"""An IEC 61968-100 RequestMessage (verb `get`, noun `MeterReadings`) with a GetMeterReadings payload,
read into what the export needs: meters, usage points (consumer numbers), channels (from ReadingType
mRIDs), the time window and the correlation id.

The XML comes from outside: it is parsed with defusedxml, which refuses DTDs, entities and external
references (no billion laughs, no file reads), and every problem is a RequestProblem naming the element."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from api.cim.documents import MESSAGE_NS
from api.cim.tables import CimTables
from gateway.errors import InvalidRequest
from gateway.model import Channel

GET_NS = "http://iec.ch/TC57/2011/GetMeterReadings#"
_M = f"{{{MESSAGE_NS}}}"
_G = f"{{{GET_NS}}}"
#: More selectors than this is a bulk export; ask for it in pages of meters.
MAX_SELECTORS = 1000


class RequestProblem(InvalidRequest):
    """The RequestMessage cannot be served: what is wrong and where (an element path)."""

    def __init__(self, message: str, xpath: str | None = None) -> None:
        super().__init__(message)
        self.xpath = xpath


@dataclass(frozen=True, slots=True)
class GetReadings:
    meters: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: frozenset[Channel] | None  # None: every channel
    start: datetime | None
    end: datetime | None
    correlation_id: str | None


def parse_get(body: bytes, tables: CimTables) -> GetReadings:
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        msg = f"the document is refused: {type(exc).__name__} (DTDs, entities and external references are not allowed)"
        raise RequestProblem(msg) from None
    except (ParseError, ValueError) as exc:
        msg = f"not well-formed XML: {exc}"
        raise RequestProblem(msg) from None
    if root.tag != f"{_M}RequestMessage":
        msg = f"the root element must be RequestMessage in namespace {MESSAGE_NS}, not {root.tag}"
        raise RequestProblem(msg, "/")
    verb, noun = root.findtext(f"{_M}Header/{_M}Verb"), root.findtext(f"{_M}Header/{_M}Noun")
    if verb != "get" or noun not in ("MeterReadings", "GetMeterReadings"):
        msg = f"Header must have Verb 'get' and Noun 'MeterReadings', not {verb!r} / {noun!r}"
        raise RequestProblem(msg, "/RequestMessage/Header")
    correlation = root.findtext(f"{_M}Header/{_M}CorrelationID") or root.findtext(f"{_M}Header/{_M}MessageID")
    start = _time(root.findtext(f"{_M}Request/{_M}StartTime"), "Request/StartTime")
    end = _time(root.findtext(f"{_M}Request/{_M}EndTime"), "Request/EndTime")
    get = root.find(f"{_M}Payload/{_G}GetMeterReadings")
    if get is None:
        get = root.find(f"{_M}Request/{_G}GetMeterReadings")
    if get is None:
        msg = f"Payload must hold a GetMeterReadings element in namespace {GET_NS}"
        raise RequestProblem(msg, "/RequestMessage/Payload")
    schedule = get.find(f"{_G}TimeSchedule/{_G}scheduleInterval")
    if schedule is not None:
        start = _time(schedule.findtext(f"{_G}start"), "TimeSchedule/scheduleInterval/start") or start
        end = _time(schedule.findtext(f"{_G}end"), "TimeSchedule/scheduleInterval/end") or end
    meters = _ids(get, "EndDevice") + _ids(get, "Meter")
    consumers = _ids(get, "UsagePoint")
    if len(meters) + len(consumers) > MAX_SELECTORS:
        msg = f"{len(meters) + len(consumers)} meters and usage points; at most {MAX_SELECTORS} per request"
        raise RequestProblem(msg, "/RequestMessage/Payload/GetMeterReadings")
    by_code = {code: channel for channel, code in tables.register_types.items()}
    channels: set[Channel] = set()
    for code in _ids(get, "ReadingType"):
        channel = by_code.get(code)
        if channel is None:
            msg = f"ReadingType {code!r} is not one this gateway exports (see reading_types.toml)"
            raise RequestProblem(msg, "/RequestMessage/Payload/GetMeterReadings/ReadingType")
        channels.add(channel)
    return GetReadings(tuple(dict.fromkeys(meters)), tuple(dict.fromkeys(consumers)),
                       frozenset(channels) or None, start, end, correlation)


def _ids(parent: Element, name: str) -> list[str]:
    """The mRID (else the first Names/name) of each `name` selector."""
    out = []
    for i, element in enumerate(parent.iterfind(f"{_G}{name}")):
        value = element.findtext(f"{_G}mRID") or element.findtext(f"{_G}Names/{_G}name")
        if not value or not value.strip():
            msg = f"{name}[{i + 1}] has neither mRID nor Names/name"
            raise RequestProblem(msg, f"/RequestMessage/Payload/GetMeterReadings/{name}[{i + 1}]")
        out.append(value.strip())
    return out


def _time(value: str | None, where: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        msg = f"{where} {value.strip()[:40]!r} is not an ISO 8601 date-time"
        raise RequestProblem(msg, f"/RequestMessage/{where}") from None
    if ts.tzinfo is None:
        msg = f"{where} {value.strip()[:40]!r} has no time zone; add Z or an offset"
        raise RequestProblem(msg, f"/RequestMessage/{where}")
    return ts
