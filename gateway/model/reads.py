"""Special reads: a reading taken from a meter now because the account system asked, with a reason
(a customer-service check, a move-out final read), stored as a real reading (SPEC §4)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.model.readings import Channel


class ReadReason(StrEnum):
    """IEC 61968-9 ReadingReasonKind values an account system asks a special read for."""

    INQUIRY = "inquiry"
    MOVE_OUT = "moveOut"
    MOVE_IN = "moveIn"
    SERVICE_DISCONNECT = "serviceDisconnect"
    SERVICE_CONNECT = "serviceConnect"


class ReadState(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # every channel asked for was read
    PARTIAL = "partial"  # some channels asked for were not in the meter's answer
    FAILED = "failed"  # the meter answered with an error, or nothing recent enough was there
    TIMED_OUT = "timed_out"  # no answer within the protocol's special-read timeout


OPEN_STATES = frozenset({ReadState.QUEUED, ReadState.IN_PROGRESS})


@dataclass(frozen=True, slots=True)
class SpecialRead:
    correlation_id: str
    meter_id: str
    reason: ReadReason
    requested_at: datetime
    state: ReadState = ReadState.QUEUED
    channels: tuple[Channel, ...] | None = None  # None: every channel the meter gives
    key_id: str | None = None  # the API key that asked
    updated_at: datetime | None = None
    ts: datetime | None = None  # the readings' measurement time
    values: tuple[tuple[Channel, float], ...] = ()  # what was read (the readings stored)
    #: How it was read ("polled", "the meter's latest message at ...") or why it failed.
    detail: str | None = None

    def moved(self, state: ReadState, at: datetime, **changes: Any) -> SpecialRead:
        return replace(self, state=state, updated_at=at, **changes)

    def doc(self) -> str:
        """Everything but the keys the store indexes, as JSON."""
        return json.dumps({"reason": self.reason.value, "state": self.state.value,
                           "channels": None if self.channels is None else [c.value for c in self.channels],
                           "key_id": self.key_id, "updated_at": _iso(self.updated_at),
                           "values": [[c.value, v] for c, v in self.values], "detail": self.detail,
                           "requested_at": _iso(self.requested_at), "ts": _iso(self.ts)})

    @classmethod
    def from_doc(cls, correlation_id: str, meter_id: str, doc: str) -> SpecialRead:
        d = json.loads(doc)
        return cls(correlation_id, meter_id, ReadReason(d["reason"]), _dt(d["requested_at"]) or datetime.min,
                   ReadState(d["state"]), None if d["channels"] is None else tuple(Channel(c) for c in d["channels"]),
                   d["key_id"], _dt(d["updated_at"]), _dt(d["ts"]),
                   tuple((Channel(c), float(v)) for c, v in d["values"]), d["detail"])


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)
