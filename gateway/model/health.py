"""What technicians' diagnostics show: snapshots of a meter's health and of one technician read.

Built by the runtime (gateway/runtime/health.py) from the drivers' counters and from what the
pipeline saw; read by the API. Snapshots are immutable copies: holding one never blocks the
gateway, and it never changes under the reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.model.events import DeadLetter, Event
from gateway.model.payg import BalanceUpdate
from gateway.model.readings import Reading


class MeterState(StrEnum):
    """One word for a meter's communication, worst first in `SEVERITY_ORDER`."""

    OK = "ok"
    #: Modbus: the last poll(s) failed, fewer than `failures_before_lost` in a row.
    #: MQTT: the last message could not be used (it went to the dead letters).
    FAILING = "failing"
    #: Modbus: `failures_before_lost` failed polls in a row (a comm_lost event was raised).
    LOST = "lost"
    #: MQTT: no message for longer than `diag.silent_after` since the last one (or since start).
    SILENT = "silent"
    #: Nothing heard yet since the gateway started, and not yet overdue.
    WAITING = "waiting"
    #: Configured with status inactive or maintenance: not polled, not expected to talk.
    INACTIVE = "inactive"


#: Worst first: how lists, the status page and the CLI order meters.
SEVERITY_ORDER: tuple[MeterState, ...] = (
    MeterState.LOST, MeterState.FAILING, MeterState.SILENT, MeterState.WAITING, MeterState.OK, MeterState.INACTIVE,
)


@dataclass(frozen=True, slots=True)
class RawBlock:
    """Register words as read from a device: function code 3 (holding) or 4 (input)."""

    function: int
    address: int
    words: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RecentPayload:
    """An MQTT message as received (text preview, bounded)."""

    topic: str
    payload: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class MeterSummary:
    """One tile of the fleet grid."""

    meter_id: str
    protocol: str  # the driver that serves it, as configured ("modbus", "mqtt", ...)
    state: MeterState
    #: Where the meter is reached: "endpoint (address) unit" for a polled meter, the topic for MQTT.
    where: str
    endpoint: str | None  # the link a polled meter shares (a Modbus bus); None for a meter that pushes
    last_seen: datetime | None  # last successful poll, or last message received
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_at: datetime | None = None
    #: When the current run of failures began (None while the meter answers well).
    failing_since: datetime | None = None
    #: It reports PAYG balances (the status page charts its balance).
    balances: bool = False


@dataclass(frozen=True, slots=True)
class MeterDiagnostics:
    """Everything the gateway knows about one meter right now."""

    summary: MeterSummary
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    polls: int = 0  # Modbus poll attempts since start
    failures: int = 0  # failed polls (Modbus) or dead-lettered messages (MQTT) since start
    messages: int = 0  # MQTT messages since start
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    breaker: str | None = None  # Modbus circuit breaker: closed | open | half_open
    last_raw: tuple[RawBlock, ...] = ()
    last_raw_at: datetime | None = None
    recent_payloads: tuple[RecentPayload, ...] = ()
    #: Newest last: the readings this gateway accepted for the meter since start (bounded).
    recent_readings: tuple[Reading, ...] = ()
    #: Events whose condition still holds (comm_lost without a later comm_restored, ...), newest first.
    open_events: tuple[Event, ...] = ()
    last_balance: BalanceUpdate | None = None
    #: PAYG: the balance updates accepted since start, newest last (bounded).
    recent_balances: tuple[BalanceUpdate, ...] = ()
    #: False when the store could not be asked (events come from this process's memory only).
    store_reachable: bool = True
    #: The driver's own state of the meter (DLMS: last association, last APDU in hex), if it keeps one.
    protocol_detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    """One technician's 'poll now': the raw words and what they decode to (not stored)."""

    meter_id: str
    endpoint: str
    unit: int
    received_at: datetime
    latency_s: float
    blocks: tuple[RawBlock, ...]
    readings: tuple[Reading, ...]
    #: Registers that could not be decoded, with the reason (same rules as the pipeline).
    deadletters: tuple[DeadLetter, ...] = ()


__all__ = [
    "SEVERITY_ORDER",
    "MeterDiagnostics",
    "MeterState",
    "MeterSummary",
    "PollResult",
    "RawBlock",
    "RecentPayload",
]
