"""The meters registry: what a client sends (MeterIn, MeterUpdate) and gets (MeterOut)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Identifier, TagValue, Text
from api.schemas.time import Timestamp
from gateway.model import Meter, MeterStatus, Protocol, Utility
from gateway.model.identifiers import MAX_TAGS

_TAGS = {"feeder": "F7", "tariff": "residential"}


class MeterOut(BaseModel):
    """A meter as the registry holds it."""

    meter_id: str = Field(examples=["M-5678"])
    device_number: str | None = Field(default=None, examples=["SDM630-2211-0457"])
    utility: str = Field(examples=["electricity"])
    model: str = Field(examples=["sdm630"])
    protocol: str = Field(examples=["modbus_tcp"])
    address: str = Field(examples=["10.0.0.7:502/3"])
    payg: bool = Field(examples=[False])
    status: str = Field(examples=["active"])
    installed_at: datetime | None = Field(default=None, examples=["2024-05-17T08:00:00Z"])
    consumer_number: str | None = Field(default=None, description="Current consumer (open assignment)",
                                        examples=["C-1001"])
    location: str | None = Field(default=None, examples=["12 Harbour Road, flat 3"])
    tags: dict[str, str] = Field(default_factory=dict, examples=[_TAGS])

    @classmethod
    def of(cls, m: Meter) -> MeterOut:
        return cls.model_validate(meter_dict(m))


def meter_dict(m: Meter) -> dict[str, Any]:
    return {"meter_id": m.meter_id, "device_number": m.device_number, "utility": m.utility.value, "model": m.model,
            "protocol": m.protocol.value, "address": m.address, "payg": m.payg, "status": m.status.value,
            "installed_at": m.installed_at, "consumer_number": m.consumer_number, "location": m.location,
            "tags": dict(m.tags)}


class MeterIn(BaseModel):
    """A meter to register. A consumer number opens its first assignment (from installed_at, else now)."""

    model_config = ConfigDict(extra="forbid")

    meter_id: Identifier = Field(description="The meter number printed on the device", examples=["M-5678"])
    utility: Utility = Field(examples=["electricity"])
    protocol: Protocol = Field(examples=["modbus_tcp"])
    address: Text = Field(default="", max_length=200, description="endpoint/unit for Modbus, the topic for MQTT",
                          examples=["10.0.0.7:502/3"])
    model: Text = Field(default="generic", min_length=1, max_length=64, description="Device profile",
                        examples=["sdm630"])
    device_number: Identifier | None = Field(default=None, examples=["SDM630-2211-0457"])
    payg: bool = Field(default=False, examples=[False])
    status: MeterStatus = Field(default=MeterStatus.ACTIVE, examples=["active"])
    installed_at: Timestamp | None = Field(default=None, examples=["2024-05-17T08:00:00Z"])
    consumer_number: Identifier | None = Field(default=None, examples=["C-1001"])
    location: Text | None = Field(default=None, max_length=500, examples=["12 Harbour Road, flat 3"])
    tags: dict[Identifier, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS, examples=[_TAGS])


class MeterUpdate(BaseModel):
    """Fields to change; leave out what stays. The consumer number changes through assignments,
    and a meter leaves service through /deactivate."""

    model_config = ConfigDict(extra="forbid")

    device_number: Identifier | None = Field(default=None, examples=["SDM630-2211-0457"])
    model: Text | None = Field(default=None, min_length=1, max_length=64, examples=["sdm630"])
    address: Text | None = Field(default=None, max_length=200, examples=["10.0.0.7:502/3"])
    payg: bool | None = Field(default=None, examples=[False])
    status: Literal["active", "maintenance"] | None = Field(default=None, examples=["maintenance"])
    installed_at: Timestamp | None = Field(default=None, description="Not after the meter's first reading nor the "
                                           "start of its first assignment (409 with the count of readings it "
                                           "would orphan)", examples=["2024-05-17T08:00:00Z"])
    location: Text | None = Field(default=None, max_length=500, examples=["14 Harbour Road"])
    tags: dict[Identifier, TagValue] | None = Field(default=None, max_length=MAX_TAGS, examples=[_TAGS])


class ImportRow(BaseModel):
    """What became of one CSV row."""

    row: int = Field(description="Line number in the file (the header is line 1)", examples=[2])
    meter_id: str | None = Field(examples=["M-5678"])
    ok: bool = Field(description="The row is valid", examples=[False])
    added: bool = Field(default=False, description="The meter was created", examples=[False])
    error: str | None = Field(default=None, examples=["utility: Input should be 'electricity', 'water', 'gas' or "
                                                      "'heat'"])


class ImportReport(BaseModel):
    """The per-row report of a CSV import."""

    imported: int = Field(description="Meters created", examples=[2])
    failed: int = Field(description="Rows refused", examples=[1])
    applied: bool = Field(description="False when errors kept the whole file out (no ?partial=true)",
                          examples=[False])
    rows: list[ImportRow]
