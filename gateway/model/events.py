"""Events and dead letters (SPEC §3, §7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.model.text import storable


class EventKind(StrEnum):
    COMM_LOST = "comm_lost"
    COMM_RESTORED = "comm_restored"
    ANOMALY = "anomaly"
    TAMPER = "tamper"
    LOW_CREDIT = "low_credit"
    CREDIT_EXHAUSTED = "credit_exhausted"
    #: The meter started running on emergency credit (issue 4 item 4).
    EMERGENCY_CREDIT = "emergency_credit"
    RELAY_DISCONNECTED = "relay_disconnected"
    RELAY_CONNECTED = "relay_connected"
    TOPUP = "topup"
    #: A command to a meter (top-up, disconnect, reconnect) was acknowledged, failed or timed out;
    #: the detail names the command, its correlation id and the outcome. Not the meter's state:
    #: topup / relay_* come from what the meter then reports.
    COMMAND = "command"
    INSPECTION_RECOMMENDED = "inspection_recommended"
    DEADLETTER = "deadletter"
    SPOOL_HIGH = "spool_high"
    #: The spool could not write (disk full, I/O error): intake paused, nothing acknowledged that is
    #: not stored. Its ts is when that began; it is stored once the spool writes again.
    SPOOL_BLOCKED = "spool_blocked"
    #: The spool writes again: intake resumed (closes SPOOL_BLOCKED).
    SPOOL_RESUMED = "spool_resumed"
    #: A damaged spool file was moved aside and its readable batches copied into a fresh one; the
    #: detail counts what was recovered and what was lost.
    SPOOL_SALVAGED = "spool_salvaged"
    #: The spool file was removed or replaced under the running gateway; what the open file held
    #: was copied into a fresh spool.
    SPOOL_REPLACED = "spool_replaced"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    #: One of the gateway's processes (its core, its API) died and was started again by
    #: `meter-gateway run`; the detail names the process and how it ended.
    PROCESS_RESTARTED = "process_restarted"
    #: A water or gas volume register advanced at every read for [vee] leak_hours (issue 18 item 7).
    LEAK_SUSPECTED = "leak_suspected"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    ts: datetime
    meter_id: str | None
    kind: EventKind
    severity: Severity
    detail: str
    acknowledged: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not become data: kept with where it came from and why.

    Its text is always storable: a NUL or a lone surrogate (which a payload can carry, and which
    neither the spool nor a store can hold) is kept as its escape, ``\\u0000`` / ``\\ud800``.
    A dead letter that could not be stored would stop the very input it is there to set aside.
    """

    ts: datetime
    source: str  # "mqtt" | "modbus"
    where: str  # topic, or endpoint/unit/address
    reason: str  # short stable name: malformed_json, wrong_type, unknown_meter, ...
    detail: str
    payload: str  # truncated for storage
    meter_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("source", "where", "reason", "detail", "payload", "meter_id"):
            value = getattr(self, name)
            if isinstance(value, str):
                clean = storable(value)
                if clean is not value:
                    object.__setattr__(self, name, clean)
