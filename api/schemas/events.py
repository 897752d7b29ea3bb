"""Events and the fleet summary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from storage.records import StoredEvent


class EventOut(BaseModel):
    """Something that happened to a meter or the gateway."""

    seq: int = Field(examples=[812])
    ts: datetime = Field(examples=["2026-03-01T12:15:00Z"])
    meter_id: str | None = Field(examples=["M-0001"])
    kind: str = Field(examples=["anomaly"])
    severity: str = Field(examples=["warning"])
    detail: str = Field(examples=["energy_import spike: +412 kWh in 15 min"])
    acknowledged: bool = Field(examples=[False])

    @staticmethod
    def row(s: StoredEvent) -> dict[str, Any]:
        e = s.event
        return {"seq": s.seq, "ts": e.ts, "meter_id": e.meter_id, "kind": e.kind.value, "severity": e.severity.value,
                "detail": e.detail, "acknowledged": e.acknowledged}


class SilentMeter(BaseModel):
    """An active meter that sent nothing for longer than it should have."""

    meter_id: str = Field(examples=["M-0007"])
    last_seen: datetime | None = Field(description="null: nothing in the last 7 days", examples=["2026-03-01T09:00:00Z"])
    silent_after_s: float = Field(description="3x its interval, or 1 h when the interval is not known here",
                                  examples=[180.0])


class AnomalySummary(BaseModel):
    """Anomaly-type events of the last 24 h."""

    total: int = Field(examples=[5])
    by_kind: dict[str, int] = Field(examples=[{"anomaly": 3, "tamper": 1, "inspection_recommended": 1}])
    meters: list[str] = Field(description="Meters concerned", examples=[["M-0003", "M-0010"]])


class FleetSummary(BaseModel):
    """The fleet at a glance."""

    meters: int = Field(examples=[15])
    by_status: dict[str, int] = Field(examples=[{"active": 14, "maintenance": 1, "inactive": 0}])
    silent: int = Field(description="Active meters with no data for 3x their interval, or 1 h when it is not known "
                        "here; the list, a page at a time: GET /v1/fleet/silent", examples=[2])
    anomalies_24h: AnomalySummary
