"""Readings, the change feed, verification, consumption and billing reads."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.cim.tables import CimTables
from api.schemas.common import Identifier, Page, Text
from api.schemas.time import Timestamp
from gateway.model import UNITS, Channel, Reading
from gateway.model.readings import flag_names
from storage.boundary import estimate_method
from storage.records import BillingRead, ConsumptionBucket, StatusChange

__all__ = ["DEPRECATED", "BillingMeterOut", "BillingOut", "BucketOut", "ConsumptionOut", "FeedOut", "HistoryEntryOut",
           "Page", "PeriodReadOut", "QualityCodes", "ReadingOut", "VerifierOut", "VerifyIn", "period_read_dict", "reading_dict"]

#: Marks a field the OpenAPI document lists as deprecated (kept one release; see CHANGELOG.md).
#: In the schema only: pydantic's own `deprecated=` also warns whenever the field is read.
DEPRECATED: dict[str, Any] = {"deprecated": True}

_TS = "2026-03-01T12:15:00Z"


class ReadingOut(BaseModel):
    """One reading: value in the channel's canonical unit, VEE flags and status."""

    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    ts: datetime = Field(description="Measurement time (UTC)", examples=[_TS])
    value: float = Field(examples=[1234.5])
    unit: str = Field(examples=["kWh"])
    kind: str = Field(examples=["cumulative"])
    status: str = Field(description="valid | suspect | rejected | estimated | verified", examples=["valid"])
    quality: list[str] = Field(description="VEE quality flags", examples=[["rollover"]])
    quality_codes: list[str] = Field(
        default_factory=list, description="The status and the quality flags as IEC 61968-9 ReadingQuality codes "
        "(system.category.index; the table the README lists, replaceable per deployment: [api] cim_tables)",
        examples=[["3.5.258", "3.6.4"]])
    source: str = Field(examples=["modbus"])
    received_at: datetime | None = Field(default=None, examples=["2026-03-01T12:15:01.204Z"])
    seq: int | None = Field(default=None, description="Store-wide ingest sequence", examples=[48213])
    gateway_id: str | None = Field(default=None, description="The gateway that stored it (its configured "
                                   "id); null for rows stored before gateways recorded it", examples=["edge-01"])

    @classmethod
    def of(cls, r: Reading) -> ReadingOut:
        return cls.model_validate(reading_dict(r))


# Unit by channel text: a str key hashes in C (its hash is cached), an enum member's
# hash is a Python call.
_UNIT = {c.value: unit for c, unit in UNITS.items()}



class QualityCodes:
    """A reading's ReadingQuality codes, worked out once per (status, flags) combination: a page of
    readings holds a handful of them. One per request (or per use), never shared between apps."""

    def __init__(self, tables: CimTables) -> None:
        self._tables = tables
        self._known: dict[tuple[str, int], list[str]] = {}

    def __call__(self, r: Reading) -> list[str]:
        key = (r.status._value_, int(r.quality))
        codes = self._known.get(key)
        if codes is None:
            codes = self._known[key] = self._tables.qualities(r.status, key[1])
        return codes

    def reading(self, r: Reading) -> dict[str, Any]:
        """`reading_dict` with the codes."""
        return reading_dict(r, self)


def reading_dict(r: Reading, codes: QualityCodes | None = None) -> dict[str, Any]:
    """A reading as ReadingOut's fields; pages are built from these (pydantic validates and
    serialises them in one pass, several times faster than building the models here).
    `codes` gives `quality_codes` (the app's CIM tables); without it the list is empty."""
    # `_value_` is the member's plain attribute: `.value` is a descriptor call, and a page
    # of readings reads four of them per row. Plain str is also what pydantic writes fastest.
    channel = r.channel._value_
    return {"meter_id": r.meter_id, "channel": channel, "ts": r.ts, "value": r.value, "unit": _UNIT[channel],
            "kind": r.kind._value_, "status": r.status._value_, "quality": flag_names(r.quality),
            "quality_codes": codes(r) if codes is not None else [], "source": r.source._value_, "received_at": r.received_at, "seq": r.seq,
            "gateway_id": r.gateway_id}


class PeriodReadOut(ReadingOut):
    """A read that opens or closes a period (a bill, an assignment): the reading, and how it
    was chosen. The same object in bills and assignments."""

    flags: list[str] = Field(description="estimated: an estimate (no real read within the estimate window before "
                             "the boundary; see estimate_method); opening_after_start: no billable read at or before "
                             "the start, so the first one after it (its ts says when)",
                             examples=[["opening_after_start"]])
    estimate_method: str | None = Field(description="How the estimate was made (linear | like_day | flat; profile: a like-day estimate "
                                        "stored before the method had its name; unknown); null for "
                                        "a real read", examples=[None])


def period_read_dict(r: Reading, *, after_start: bool = False) -> dict[str, Any]:
    """A period's opening or closing read as PeriodReadOut's fields."""
    method = estimate_method(r)
    flags = [*(["estimated"] if method is not None else []), *(["opening_after_start"] if after_start else [])]
    return {**reading_dict(r), "flags": flags, "estimate_method": method}


def _opt_read(r: Reading | None, *, after_start: bool = False) -> dict[str, Any] | None:
    return None if r is None else period_read_dict(r, after_start=after_start)


class FeedOut(BaseModel):
    """A page of the change feed: new readings and status changes in ingest order."""

    items: list[ReadingOut]
    next_cursor: str = Field(description="Store it; pass it as `after` next time (also when `items` is empty)",
                             examples=["WzQ4MjEzXQ"])
    more: bool = Field(description="True when the page is full: ask again at once", examples=[True])


class VerifierOut(BaseModel):
    """The API key that made a verdict."""

    key_id: str | None = Field(description="null for verdicts recorded before keys were (gateway 0.2 and older)",
                               examples=["k7f3a9c2"])
    name: str | None = Field(description="The key's name; for verdicts recorded before key ids, the text "
                             "'api key <id> (<name>)'", examples=["billing-clerk"])


class HistoryEntryOut(BaseModel):
    """One verdict on a reading, as the verification log keeps it."""

    at: datetime = Field(description="When the verdict was recorded (UTC)", examples=["2026-03-02T09:30:00Z"])
    from_status: str | None = Field(description="The reading's status before", examples=["suspect"])
    to_status: str = Field(description="The status it was given", examples=["verified"])
    note: str | None = Field(examples=["Checked on site: register photographed, value correct"])
    by: VerifierOut

    @staticmethod
    def row(c: StatusChange) -> dict[str, Any]:
        return {"at": c.at, "from_status": None if c.previous is None else c.previous.value,
                "to_status": c.status.value, "note": c.note, "by": {"key_id": c.key_id, "name": c.by}}


class VerifyIn(BaseModel):
    """A person's verdict on a (suspect) reading."""

    meter_id: Identifier = Field(examples=["M-0001"])
    channel: Channel = Field(examples=["energy_import"])
    ts: Timestamp = Field(description="The reading's measurement time, with zone", examples=[_TS])
    status: Literal["verified", "rejected"] = Field(examples=["verified"])
    note: Text = Field(min_length=1, max_length=2000, description="Why: kept in the verification log",
                       examples=["Checked on site: register photographed, value correct"])


class BucketOut(BaseModel):
    """Consumption of one bucket [start, end)."""

    start: datetime = Field(description="In the request's time zone, with its offset (so the two local hours of a "
                            "DST fall-back differ by their offset); Z for UTC", examples=["2026-03-01T00:00:00+03:00"])
    end: datetime = Field(description="As start", examples=["2026-03-02T00:00:00+03:00"])
    value: float | None = Field(description="Consumption in the channel's unit; null when there is no read to "
                                "measure from, or none inside the bucket (also for a bucket after now)",
                                examples=[12.75])
    first_read: ReadingOut | None = Field(description="The read that opens the bucket: the boundary read at start, "
                                          "or the first read after it when none is at or before it "
                                          "(opening_after_start)")
    last_read: ReadingOut | None = Field(description="The read that closes it: the boundary read at end (at now "
                                         "for a bucket that has not ended)")
    estimated: bool = Field(description="The opening or the closing read is an estimate", examples=[False])
    suspect: bool = Field(description="A suspect or rejected read lies inside, or the value cannot be trusted",
                          examples=[False])
    gap: bool = Field(description="Reads were missing inside the bucket", examples=[False])
    opening_after_start: bool = Field(description="No billable read at or before start: first_read is the first "
                                      "one after it", examples=[False])
    complete: bool = Field(description="False for a bucket that has not ended yet", examples=[True])

    @staticmethod
    def row(b: ConsumptionBucket, zone: tzinfo) -> dict[str, Any]:
        return {"start": b.start.astimezone(zone), "end": b.end.astimezone(zone), "value": b.value,
                "first_read": None if b.first_read is None else reading_dict(b.first_read),
                "last_read": None if b.last_read is None else reading_dict(b.last_read),
                "estimated": b.estimated, "suspect": b.suspect, "gap": b.gap,
                "opening_after_start": b.opening_after_start, "complete": b.complete}


class ConsumptionOut(BaseModel):
    """Consumption of one meter and channel per hour, day or month."""

    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    unit: str = Field(examples=["kWh"])
    bucket: str = Field(examples=["day"])
    tz: str = Field(examples=["Africa/Nairobi"])
    start: datetime = Field(description="Start of the first bucket (the period asked for, widened to whole "
                            "buckets), in tz", examples=["2026-03-01T00:00:00+03:00"])
    end: datetime = Field(description="End of the last bucket, in tz", examples=["2026-04-01T00:00:00+03:00"])
    complete: bool = Field(description="False when the last bucket ends after now: measured up to as_of",
                           examples=[True])
    as_of: datetime | None = Field(description="ts of the newest read used (the last bucket's closing read)",
                                   examples=["2026-03-31T23:45:00Z"])
    buckets: list[BucketOut]


class BillingMeterOut(BaseModel):
    """One meter's part of a consumer's bill: opening and closing read of the period it was assigned."""

    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    unit: str = Field(examples=["kWh"])
    start: datetime = Field(examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(examples=["2026-04-01T00:00:00Z"])
    opening: PeriodReadOut | None = Field(description="The boundary read at start (the last real billable read at "
                                          "or before it, an estimate only where none lies within the estimate "
                                          "window); without one, the first billable read after start "
                                          "(opening_after_start)")
    closing: PeriodReadOut | None = Field(description="The boundary read at end (at now while the period has not "
                                          "ended)")
    consumption: float | None = Field(description="null when no billable read lies inside the period",
                                      examples=[312.4])
    estimated: bool = Field(description="The opening or the closing read is an estimate", examples=[False])
    suspect: bool = Field(description="A suspect or rejected read lies in the period, a rollover has no modulus, "
                          "or the consumption is negative", examples=[False])
    flags: list[str] = Field(description="What the period's reads show, by name: suspect, rejected, estimated, VEE "
                             "quality flags (gap, spike, ...), opening_after_start; counted in flag_counts",
                             examples=[["rollover", "suspect"]])
    flag_counts: dict[str, int] = Field(description="How many reads of the period (from the opening read, or the "
                                        "start if earlier, to the end) show each flag",
                                        examples=[{"rollover": 1, "suspect": 25}])
    complete: bool = Field(description="False while the period has not ended: measured up to as_of",
                           examples=[True])
    as_of: datetime | None = Field(description="ts of the newest read used (the closing read)",
                                   examples=["2026-03-31T23:45:00Z"])

    @staticmethod
    def row(b: BillingRead) -> dict[str, Any]:
        return {"meter_id": b.meter_id, "channel": b.channel.value, "unit": UNITS[b.channel], "start": b.start,
                "end": b.end, "opening": _opt_read(b.opening, after_start=b.opening_after_start),
                "closing": _opt_read(b.closing), "consumption": b.consumption, "estimated": b.estimated,
                "suspect": b.suspect, "flags": b.flags, "flag_counts": b.flag_counts, "complete": b.complete,
                "as_of": b.as_of}


class BillingOut(BaseModel):
    """Billing reads of a consumer for a period, per meter it had in that period."""

    consumer_number: str = Field(examples=["C-1001"])
    start: datetime = Field(description="The period's start (the `from` asked for)", examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(description="The period's end (the `to` asked for)", examples=["2026-04-01T00:00:00Z"])
    from_: datetime = Field(alias="from", description="Deprecated: use start (removed in the next release)",
                            examples=["2026-03-01T00:00:00Z"], json_schema_extra=DEPRECATED)
    to: datetime = Field(description="Deprecated: use end (removed in the next release)",
                         examples=["2026-04-01T00:00:00Z"], json_schema_extra=DEPRECATED)
    meters: list[BillingMeterOut]
    estimated: bool = Field(description="Any part was estimated", examples=[False])
    suspect: bool = Field(description="Any part was suspect", examples=[False])
    complete: bool = Field(description="False while the period has not ended: measured up to as_of",
                           examples=[True])
    as_of: datetime | None = Field(description="ts of the newest read used by any part", examples=[
        "2026-03-31T23:45:00Z"])
