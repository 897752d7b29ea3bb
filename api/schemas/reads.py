"""Special reads: what the account system asks and what it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.readings import _UNIT
from gateway.model import Channel
from gateway.model.reads import ReadReason, SpecialRead


class ReadIn(BaseModel):
    """A read of the meter now, with its reason (IEC 61968-9 ReadingReasonKind)."""

    model_config = ConfigDict(extra="forbid")

    reason: ReadReason = Field(examples=["moveOut"], description="inquiry | moveOut | moveIn | serviceDisconnect | "
                               "serviceConnect")
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=64,
                                           description="Only these channels (default: every channel the meter gives)",
                                           examples=[["energy_import"]])


class ReadValue(BaseModel):
    channel: str = Field(examples=["energy_import"])
    value: float = Field(examples=[12345.6])
    unit: str = Field(examples=["kWh"])


class ReadOut(BaseModel):
    """A special read and its outcome; its readings are stored readings (in the feed once)."""

    correlation_id: str = Field(examples=["0b9f0c8e-3f55-4f0e-9a8e-2f1d6c1b7a10"])
    meter_id: str = Field(examples=["M-0001"])
    reason: str = Field(examples=["moveOut"])
    state: str = Field(description="queued | in_progress | completed | partial | failed | timed_out",
                       examples=["completed"])
    requested_at: datetime = Field(examples=["2026-03-01T12:15:00Z"])
    updated_at: datetime | None = Field(default=None, examples=["2026-03-01T12:15:01Z"])
    ts: datetime | None = Field(default=None, description="The readings' measurement time",
                                examples=["2026-03-01T12:15:00.412Z"])
    values: list[ReadValue] = Field(default_factory=list)
    channels: list[str] | None = Field(default=None, description="The channels asked for (null: all)")
    detail: str | None = Field(default=None, description="How it was read, or why it failed",
                               examples=["polled now"])
    key_id: str | None = Field(default=None, description="The API key that asked", examples=["k_3f9a2b"])

    @staticmethod
    def row(r: SpecialRead) -> dict[str, Any]:
        return {"correlation_id": r.correlation_id, "meter_id": r.meter_id, "reason": r.reason.value,
                "state": r.state.value, "requested_at": r.requested_at, "updated_at": r.updated_at, "ts": r.ts,
                "values": [{"channel": c.value, "value": v, "unit": _UNIT[c.value]} for c, v in r.values],
                "channels": None if r.channels is None else [c.value for c in r.channels], "detail": r.detail,
                "key_id": r.key_id}
