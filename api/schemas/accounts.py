"""Assignments (move-in / move-out) and consumer numbers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Identifier
from api.schemas.meters import MeterOut
from api.schemas.time import Timestamp
from gateway.model import Assignment


class AssignmentIn(BaseModel):
    """Assign the meter to a consumer from `start` (a move-in)."""

    model_config = ConfigDict(extra="forbid")

    consumer_number: Identifier = Field(examples=["C-1002"])
    start: Timestamp = Field(description="When the new consumer takes over, with zone; not in the future",
                            examples=["2026-03-01T00:00:00Z"])


class AssignmentOut(BaseModel):
    """A meter linked to a consumer from start to end, with the opening and closing reads."""

    meter_id: str = Field(examples=["M-0001"])
    consumer_number: str = Field(examples=["C-1002"])
    start: datetime = Field(examples=["2026-03-01T00:00:00Z"])
    end: datetime | None = Field(description="null while the assignment is open", examples=[None])
    opening_read: float | None = Field(description="Last valid cumulative read at or before start",
                                       examples=[10234.5])
    closing_read: float | None = Field(description="Last valid cumulative read at or before end", examples=[None])

    @staticmethod
    def row(a: Assignment) -> dict[str, Any]:
        return {"meter_id": a.meter_id, "consumer_number": a.consumer_number, "start": a.start, "end": a.end,
                "opening_read": a.opening_read, "closing_read": a.closing_read}


class ConsumerOut(BaseModel):
    """A consumer number: its current meters and its whole assignment history."""

    consumer_number: str = Field(examples=["C-1002"])
    active: bool = Field(examples=[True])
    created_at: datetime = Field(examples=["2026-03-01T00:00:04Z"])
    deactivated_at: datetime | None = Field(examples=[None])
    meters: list[MeterOut] = Field(description="Meters assigned to it now")
    assignments: list[AssignmentOut] = Field(description="Every assignment, oldest first")
