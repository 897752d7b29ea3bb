"""Readings, the change feed, verification, consumption and billing reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import Identifier, Page, Text
from api.schemas.time import Timestamp
from gateway.model import UNITS, Channel, Reading
from gateway.model.readings import flag_names
from storage.base import BillingRead, ConsumptionBucket, StatusChange

__all__ = ["BillingMeterOut", "BillingOut", "BucketOut", "ConsumptionOut", "FeedOut", "HistoryEntryOut", "Page",
           "ReadingOut", "VerifierOut", "VerifyIn", "reading_dict"]

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



def reading_dict(r: Reading) -> dict[str, Any]:
    """A reading as ReadingOut's fields; pages are built from these (pydantic validates and
    serialises them in one pass, several times faster than building the models here)."""
    # `_value_` is the member's plain attribute: `.value` is a descriptor call, and a page
    # of readings reads four of them per row. Plain str is also what pydantic writes fastest.
    channel = r.channel._value_
    return {"meter_id": r.meter_id, "channel": channel, "ts": r.ts, "value": r.value, "unit": _UNIT[channel],
            "kind": r.kind._value_, "status": r.status._value_, "quality": flag_names(r.quality),
            "source": r.source._value_, "received_at": r.received_at, "seq": r.seq,
            "gateway_id": r.gateway_id}


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

    start: datetime = Field(examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(examples=["2026-03-02T00:00:00Z"])
    value: float | None = Field(description="Consumption in the channel's unit; null when there is no read to "
                                "measure from, or none inside the bucket", examples=[12.75])
    first_read: ReadingOut | None = Field(description="The read that opens the bucket (last at or before start)")
    last_read: ReadingOut | None = Field(description="The read that closes it (last at or before end)")
    estimated: bool = Field(description="An estimated read contributed", examples=[False])
    suspect: bool = Field(description="A suspect or rejected read lies inside, or the value cannot be trusted",
                          examples=[False])
    gap: bool = Field(description="Reads were missing inside the bucket", examples=[False])

    @staticmethod
    def row(b: ConsumptionBucket) -> dict[str, Any]:
        return {"start": b.start, "end": b.end, "value": b.value,
                "first_read": None if b.first_read is None else reading_dict(b.first_read),
                "last_read": None if b.last_read is None else reading_dict(b.last_read),
                "estimated": b.estimated, "suspect": b.suspect, "gap": b.gap}


class ConsumptionOut(BaseModel):
    """Consumption of one meter and channel per hour, day or month."""

    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    unit: str = Field(examples=["kWh"])
    bucket: str = Field(examples=["day"])
    tz: str = Field(examples=["Africa/Nairobi"])
    buckets: list[BucketOut]


class BillingMeterOut(BaseModel):
    """One meter's part of a consumer's bill: opening and closing read of the period it was assigned."""

    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    unit: str = Field(examples=["kWh"])
    start: datetime = Field(examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(examples=["2026-04-01T00:00:00Z"])
    opening: ReadingOut | None = Field(description="Last valid read at or before start")
    closing: ReadingOut | None = Field(description="Last valid read at or before end")
    consumption: float | None = Field(examples=[312.4])
    estimated: bool = Field(examples=[False])
    suspect: bool = Field(examples=[False])
    flags: list[str] = Field(description="Quality flags of the reads used", examples=[["rollover"]])

    @staticmethod
    def row(b: BillingRead) -> dict[str, Any]:
        return {"meter_id": b.meter_id, "channel": b.channel.value, "unit": UNITS[b.channel], "start": b.start,
                "end": b.end, "opening": None if b.opening is None else reading_dict(b.opening),
                "closing": None if b.closing is None else reading_dict(b.closing), "consumption": b.consumption,
                "estimated": b.estimated, "suspect": b.suspect, "flags": b.flags}


class BillingOut(BaseModel):
    """Billing reads of a consumer for a period, per meter it had in that period."""

    consumer_number: str = Field(examples=["C-1001"])
    start: datetime = Field(alias="from", examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(alias="to", examples=["2026-04-01T00:00:00Z"])
    meters: list[BillingMeterOut]
    estimated: bool = Field(description="Any part was estimated", examples=[False])
    suspect: bool = Field(description="Any part was suspect", examples=[False])
