"""Assignments (move-in / move-out) and consumer numbers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Identifier
from api.schemas.meters import MeterOut
from api.schemas.readings import DEPRECATED, PeriodReadOut, period_read_dict
from api.schemas.time import Timestamp
from gateway.model import Assignment


class AssignmentIn(BaseModel):
    """Assign the meter to a consumer from `start` (a move-in)."""

    model_config = ConfigDict(extra="forbid")

    consumer_number: Identifier = Field(examples=["C-1002"])
    start: Timestamp = Field(description="When the new consumer takes over, with zone; not in the future, not "
                             "before the meter's installed_at",
                            examples=["2026-03-01T00:00:00Z"])


class AssignmentOut(BaseModel):
    """A meter linked to a consumer from start to end, with its opening and closing reads: derived from the
    readings by the rule of bills whenever it is read, so a verification or rejection changes them too."""

    meter_id: str = Field(examples=["M-0001"])
    consumer_number: str = Field(examples=["C-1002"])
    start: datetime = Field(examples=["2026-03-01T00:00:00Z"])
    end: datetime | None = Field(description="null while the assignment is open", examples=[None])
    opening: PeriodReadOut | None = Field(description="The boundary read at start (the previous assignment's "
                                          "closing read); without one, the first billable read after start "
                                          "(opening_after_start)")
    closing: PeriodReadOut | None = Field(description="The boundary read at end; null while open")
    opening_read: float | None = Field(description="Deprecated: use opening.value (removed in the next release)",
                                       examples=[10234.5], json_schema_extra=DEPRECATED)
    closing_read: float | None = Field(description="Deprecated: use closing.value (removed in the next release)",
                                       examples=[None], json_schema_extra=DEPRECATED)

    @staticmethod
    def row(a: Assignment) -> dict[str, Any]:
        return {"meter_id": a.meter_id, "consumer_number": a.consumer_number, "start": a.start, "end": a.end,
                "opening": None if a.opening is None else period_read_dict(a.opening,
                                                                           after_start=a.opening_after_start),
                "closing": None if a.closing is None else period_read_dict(a.closing),
                "opening_read": a.opening_read, "closing_read": a.closing_read}


class ConsumerOut(BaseModel):
    """A consumer number: its current meters and its whole assignment history."""

    consumer_number: str = Field(examples=["C-1002"])
    active: bool = Field(examples=[True])
    created_at: datetime = Field(examples=["2026-03-01T00:00:04Z"])
    deactivated_at: datetime | None = Field(examples=[None])
    meters: list[MeterOut] = Field(description="Meters assigned to it now")
    assignments: list[AssignmentOut] = Field(description="Every assignment, oldest first")
