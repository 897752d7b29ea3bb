"""A reading's audit trail (issue #24 item 7): a person's corrected value in, the trail out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import Identifier, Text
from api.schemas.readings import VerifierOut
from api.schemas.time import Timestamp
from gateway.model import Channel, Source
from storage.boundary import estimate_method
from storage.records import ESTIMATE_REPLACED, ReadingOrigin, StatusChange

__all__ = ["RECORDED", "EditIn", "TrailEntryOut", "TrailOut", "trail_items"]

_TS = "2026-03-01T12:15:00Z"
#: The trail's first entry: the reading as first recorded (by a meter, or by the estimator).
RECORDED = "recorded"


class EditIn(BaseModel):
    """A person's corrected value of a stored reading."""

    meter_id: Identifier = Field(examples=["M-0001"])
    channel: Channel = Field(examples=["energy_import"])
    ts: Timestamp = Field(description="The reading's measurement time, with zone", examples=[_TS])
    value: float = Field(allow_inf_nan=False, description="The corrected value, in the channel's canonical unit "
                         "(as the register shows it)", examples=[1234.5])
    note: Text = Field(min_length=1, max_length=2000, description="Why: kept in the reading's trail",
                       examples=["Register photographed by the customer: 1234.5 kWh"])


class TrailEntryOut(BaseModel):
    """One entry of a reading's audit trail."""

    action: Literal["recorded", "verdict", "edit", "estimate_replaced"] = Field(
        description="recorded: the reading as first stored (a meter's read, or an estimate); verdict: a person "
                    "verified or rejected it; edit: a person's corrected value; estimate_replaced: the real read "
                    "arrived and took the estimate's place", examples=["edit"])
    at: datetime | None = Field(description="When (UTC); for `recorded` the time the gateway received the read "
                                "(null if not known)", examples=["2026-03-02T09:30:00Z"])
    from_status: str | None = Field(description="The status before (null for recorded)", examples=["suspect"])
    to_status: str = Field(description="The status after", examples=["verified"])
    previous_value: float | None = Field(description="The value it replaced (edit, estimate_replaced); the "
                                         "original is never lost", examples=[99.5])
    value: float | None = Field(description="The value after (recorded, edit, estimate_replaced); null for a "
                                "verdict, which keeps the value", examples=[10.5])
    method: str | None = Field(description="For an estimate (recorded or replaced): linear | like_day | flat",
                               examples=["like_day"])
    rule: str | None = Field(description="The rule or method: an estimate's note (method, the real reads it was "
                             "built from, parameters) or the VEE flags the reading had ('spike')",
                             examples=["estimate=linear from=2026-03-01T12:00:00Z,2026-03-01T13:00:00Z "
                                       "linear_hours=3"])
    note: str | None = Field(description="A person's note (verdict, edit)", examples=["Photo of the register"])
    by: VerifierOut = Field(description="Who or what: the API key (verdict, edit), or the source that recorded "
                            "the value (recorded, estimate_replaced: key_id null, name e.g. 'modbus', 'estimate')")


class TrailOut(BaseModel):
    """A page of a reading's audit trail, oldest first."""

    items: list[TrailEntryOut]
    next_cursor: str | None = Field(examples=[None])


def _recorded(origin: ReadingOrigin) -> dict[str, Any]:
    """The trail's first entry: the reading as first recorded. Once its value changed (an edit, a
    replaced estimate), the first such change says what it was: value, rule and when recorded."""
    r, first = origin.reading, origin.first_change
    if first is None:
        at, note = r.received_at, r.note
        method = estimate_method(r)
        rule = r.note if method is not None else (",".join(r.quality.names()) or None)
    else:
        at, note, rule = first.recorded_at, None, first.rule
        method = _method(rule)
    estimated = method is not None
    return {"action": RECORDED, "at": at, "from_status": None, "to_status": origin.status.value,
            "previous_value": None, "value": origin.value, "method": method, "rule": rule,
            "note": None if estimated else note,
            "by": {"key_id": None, "name": Source.ESTIMATE.value if estimated else r.source.value}}


def _method(rule: str | None) -> str | None:
    """The method of an estimate's note ('estimate=like_day from=...'); None for another rule."""
    if not rule or not rule.startswith("estimate="):
        return None
    return rule.split()[0].removeprefix("estimate=")


def _entry(c: StatusChange) -> dict[str, Any]:
    method = _method(c.rule) if c.action == ESTIMATE_REPLACED else None
    return {"action": c.action, "at": c.at, "from_status": None if c.previous is None else c.previous.value,
            "to_status": c.status.value, "previous_value": c.previous_value, "value": c.value, "method": method,
            "rule": c.rule, "note": c.note, "by": {"key_id": c.key_id, "name": c.by}}


def trail_items(origin: ReadingOrigin | None, changes: list[StatusChange]) -> list[dict[str, Any]]:
    """The entries of one page: on the first page (`origin` given) the `recorded` entry, then the changes."""
    return ([] if origin is None else [_recorded(origin)]) + [_entry(c) for c in changes]
