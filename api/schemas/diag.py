"""What the technicians' diagnostics API returns (the `diag` scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.payg import BalanceOut
from api.schemas.readings import ReadingOut
from gateway.model import DeadLetter, Event
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RawBlock, RecentPayload


class CheckOut(BaseModel):
    ok: bool
    detail: str


class DriverOut(BaseModel):
    """One driver's link (a Modbus endpoint, the MQTT broker, ...): the fields every link has, then
    its protocol's own (Modbus: endpoint, transport, address, polls_per_s, connects, requests,
    timeouts, retries, drops; MQTT: broker, client_id, subscriptions, messages, messages_per_s,
    connects, reconnects, pending_acks, last_error, unknown_meter_messages)."""

    model_config = ConfigDict(extra="allow")

    label: str = Field(examples=["modbus bus-1"], description="How people name the link")
    where: str = Field(examples=["tcp 10.0.0.7:502"])
    connected: bool
    meters: int | None = Field(default=None, description="Meters served through this link")
    rate: float = Field(description="Polls or messages per second over the last minute")
    rate_unit: str = Field(examples=["polls/s"])
    errors_by_kind: dict[str, int] = Field(description="Failed polls since start by kind (timeout, modbus_exception, "
                                           "decode, connection), or dead-lettered messages by reason and connection "
                                           "failures")
    check: str | None = Field(default=None, examples=["broker"], description="The readiness check this link is")


class SpoolOut(BaseModel):
    path: str
    rows: int = Field(description="Batches waiting")
    items: int = Field(description="Readings, balances, events and dead letters waiting")
    bytes: int
    max_bytes: int
    fill: float = Field(description="bytes / max_bytes")
    high_water: float = Field(description="Fill at which the spool warns (and /readyz fails)")
    oldest_age_s: float | None = None
    held: int = Field(description="Appends that waited for room since start (back-pressure)")
    full: bool
    blocked: str | None = Field(default=None, description="Why the spool cannot write now (disk full, I/O error, "
                                "read-only); intake is paused while set. None while it can write")
    blocked_since: datetime | None = None
    write_failures: int = Field(default=0, description="Spool writes that failed and were retried since start")


class SinkOut(BaseModel):
    up: bool
    connected: bool = Field(description="Connected and migrated at least once since start")
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_write_at: datetime | None = None
    rows: int
    batches: int
    retries: int
    deadlettered: int
    last_batch_s: float


class PipelineOut(BaseModel):
    queue: int
    queue_limit: int
    readings: int
    balances: int
    events: int
    deadletters: int


class DiagEventOut(BaseModel):
    """An event as diagnostics show it (from the store or, while it is down, from memory)."""

    ts: datetime
    meter_id: str | None
    kind: str = Field(examples=["comm_lost"])
    severity: str = Field(examples=["warning"])
    detail: str
    acknowledged: bool

    @classmethod
    def of(cls, e: Event) -> DiagEventOut:
        return cls(ts=e.ts, meter_id=e.meter_id, kind=e.kind.value, severity=e.severity.value, detail=e.detail,
                   acknowledged=e.acknowledged)


class GatewayStatusOut(BaseModel):
    gateway_id: str
    version: str
    started_at: datetime
    uptime_s: float
    config_file: str | None = None
    config_hash: str | None = Field(default=None, description="First 16 hex digits of the file's SHA-256")
    storage_mode: str | None = None
    ready: bool
    failed: list[str] = Field(description="Names of the readiness checks that fail")
    checks: dict[str, CheckOut]
    meters: dict[str, int] = Field(description="Configured meters by state")
    drivers: dict[str, list[DriverOut] | DriverOut | None] = Field(
        description="By protocol: its links (a list), or its one link (an object, null while it runs none)")
    spool: SpoolOut | None = None
    sink: SinkOut | None = None
    pipeline: PipelineOut | None = None
    latest_events: list[DiagEventOut]
    events_from_store: bool = Field(description="False: the store did not answer; events are this process's own")

    @classmethod
    def of(cls, status: dict[str, Any], readiness: dict[str, Any], events: list[Event],
           events_from_store: bool) -> GatewayStatusOut:
        return cls.model_validate({**status, "ready": readiness["ready"], "failed": readiness["failed"],
                                   "checks": readiness["checks"], "latest_events": [DiagEventOut.of(e) for e in events],
                                   "events_from_store": events_from_store})


class MeterSummaryOut(BaseModel):
    meter_id: str = Field(examples=["M-0001"])
    protocol: str = Field(examples=["modbus"], description="The driver that serves the meter (a registered protocol)")
    state: str = Field(examples=["failing"], description="ok | failing | lost | silent | waiting | inactive")
    where: str
    endpoint: str | None = None
    last_seen: datetime | None = Field(default=None, description="Last successful poll, or last message")
    consecutive_failures: int
    last_error: str | None = None
    last_error_kind: str | None = Field(default=None, examples=["timeout"])
    last_error_at: datetime | None = None
    failing_since: datetime | None = Field(default=None, description="Start of the current run of failures")

    @classmethod
    def of(cls, s: MeterSummary) -> MeterSummaryOut:
        return cls(meter_id=s.meter_id, protocol=s.protocol, state=s.state.value,
                   where=s.where, endpoint=s.endpoint, last_seen=s.last_seen,
                   consecutive_failures=s.consecutive_failures, last_error=s.last_error,
                   last_error_kind=s.last_error_kind, last_error_at=s.last_error_at, failing_since=s.failing_since)


class FleetOut(BaseModel):
    counts: dict[str, int] = Field(description="Meters by state")
    meters: list[MeterSummaryOut] = Field(description="Worst state first, then by meter id")


class RawBlockOut(BaseModel):
    function: int = Field(description="3 holding, 4 input")
    address: int
    words: list[int]
    hex: list[str] = Field(examples=[["0x43fa", "0x0000"]])

    @classmethod
    def of(cls, b: RawBlock) -> RawBlockOut:
        return cls(function=b.function, address=b.address, words=list(b.words), hex=[f"{w:#06x}" for w in b.words])


class PayloadOut(BaseModel):
    topic: str
    payload: str = Field(description="As received (text, the first 512 bytes)")
    received_at: datetime

    @classmethod
    def of(cls, p: RecentPayload) -> PayloadOut:
        return cls(topic=p.topic, payload=p.payload, received_at=p.received_at)


class DeadLetterOut(BaseModel):
    ts: datetime
    source: str = Field(examples=["mqtt"])
    where: str = Field(description="Topic, or endpoint/unit/register")
    reason: str = Field(examples=["malformed_json"])
    detail: str
    payload: str
    meter_id: str | None = None

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterOut:
        return cls(ts=d.ts, source=d.source, where=d.where, reason=d.reason, detail=d.detail, payload=d.payload,
                   meter_id=d.meter_id)


class DeadLettersOut(BaseModel):
    items: list[DeadLetterOut] = Field(description="Newest first")
    store_reachable: bool = Field(description="False: only what this process saw since it started")


class EventsOut(BaseModel):
    items: list[DiagEventOut] = Field(description="Newest first")
    store_reachable: bool


class MeterDiagnosticsOut(MeterSummaryOut):
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    latency_p50_s: float | None = Field(default=None, description="Of the last 256 successful polls")
    latency_p95_s: float | None = None
    polls: int
    failures: int
    messages: int
    errors_by_kind: dict[str, int]
    breaker: str | None = Field(default=None, description="closed | open | half_open (Modbus)")
    last_raw: list[RawBlockOut] = Field(description="Registers of the last successful poll (Modbus)")
    last_raw_at: datetime | None = None
    recent_payloads: list[PayloadOut] = Field(description="Last MQTT payloads, newest last")
    recent_readings: list[ReadingOut] = Field(description="Accepted since start, newest last, with their flags")
    open_events: list[DiagEventOut] = Field(description="Events whose condition still holds, newest first")
    last_balance: BalanceOut | None = None
    recent_balances: list[BalanceOut] = Field(description="PAYG balance updates accepted since start, newest last")
    store_reachable: bool
    protocol_detail: dict[str, Any] | None = Field(default=None, description=(
        "The driver's own state of the meter, if it keeps one (DLMS: last association, security mechanism, "
        "latency p50/p90/p99, last error, last APDU received in hex, as sent: ciphered stays ciphered). "
        "Never keys or passwords"))

    @classmethod
    def of_diag(cls, d: MeterDiagnostics) -> MeterDiagnosticsOut:
        base = MeterSummaryOut.of(d.summary).model_dump()
        return cls(**base, last_attempt=d.last_attempt, last_success=d.last_success,
                   latency_p50_s=d.latency_p50_s, latency_p95_s=d.latency_p95_s, polls=d.polls,
                   failures=d.failures, messages=d.messages, errors_by_kind=d.errors_by_kind, breaker=d.breaker,
                   last_raw=[RawBlockOut.of(b) for b in d.last_raw], last_raw_at=d.last_raw_at,
                   recent_payloads=[PayloadOut.of(p) for p in d.recent_payloads],
                   recent_readings=[ReadingOut.of(r) for r in d.recent_readings],
                   open_events=[DiagEventOut.of(e) for e in d.open_events],
                   last_balance=BalanceOut.model_validate(BalanceOut.row(d.last_balance)) if d.last_balance is not None else None,
                   recent_balances=[BalanceOut.model_validate(BalanceOut.row(b)) for b in d.recent_balances],
                   store_reachable=d.store_reachable,
                   protocol_detail=dict(d.protocol_detail) if d.protocol_detail is not None else None)


class DecodedValueOut(BaseModel):
    channel: str = Field(examples=["energy_import"])
    value: float
    unit: str = Field(examples=["kWh"])
    kind: str
    quality: list[str]


class PollResultOut(BaseModel):
    meter_id: str
    endpoint: str
    unit: int
    received_at: datetime
    latency_s: float
    values: list[DecodedValueOut] = Field(description="Decoded like the pipeline does; not validated, not stored")
    raw: list[RawBlockOut]
    problems: list[DeadLetterOut] = Field(description="Registers that could not be decoded, and why")

    @classmethod
    def of(cls, p: PollResult) -> PollResultOut:
        values = [DecodedValueOut(channel=r.channel.value, value=r.value, unit=ReadingOut.of(r).unit,
                                  kind=r.kind.value, quality=r.quality.names()) for r in p.readings]
        return cls(meter_id=p.meter_id, endpoint=p.endpoint, unit=p.unit, received_at=p.received_at,
                   latency_s=p.latency_s, values=values, raw=[RawBlockOut.of(b) for b in p.blocks],
                   problems=[DeadLetterOut.of(d) for d in p.deadletters])


class RegistersOut(BaseModel):
    endpoint: str
    unit: int
    function: Literal["holding", "input"]
    address: int
    count: int
    words: list[int]
    hex: list[str]


class MeterErrorOut(BaseModel):
    """The meter did not answer usefully: what happened and where."""

    error: str = Field(examples=["meter_error"])
    kind: str = Field(examples=["timeout"], description="timeout | modbus_exception | decode | connection")
    message: str
    meter_id: str | None = None
    where: str
    code: int | None = Field(default=None, description="The Modbus exception code, if the device sent one")


__all__ = [
    "DeadLetterOut", "DeadLettersOut", "DiagEventOut", "EventsOut", "FleetOut", "GatewayStatusOut", "MeterDiagnosticsOut",
    "MeterErrorOut", "MeterSummaryOut", "PayloadOut", "PollResultOut", "RawBlockOut", "RegistersOut",
]
