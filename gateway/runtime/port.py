"""LocalPort: the in-process gateway as the API's GatewayPort (`meter-gateway run --one-process`,
the tests' running_gateway). The port's reads of live state are async because, under `meter-gateway
run`, they cross the core's control socket (gateway.runtime.remote); here they are plain calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from gateway.model import BalanceUpdate, Channel, Command, CommandKind, DeadLetter, Event, Reading, Submission
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RecentPayload
from gateway.model.reads import ReadReason, SpecialRead


class InProcess(Protocol):
    """What LocalPort calls: `Gateway` (a Protocol, so that this module imports nothing back)."""

    async def readiness(self) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def status(self, *, per_meter: bool = True) -> dict[str, Any]: ...
    def fleet(self) -> list[MeterSummary]: ...
    def meter_summary(self, meter_id: str) -> MeterSummary: ...
    async def meter_diagnostics(self, meter_id: str) -> MeterDiagnostics: ...
    def recent_payloads(self, meter_id: str) -> list[RecentPayload]: ...
    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]: ...
    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]: ...
    async def recent_events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]: ...
    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]: ...
    async def poll_now(self, meter_id: str) -> PollResult: ...
    async def special_read(self, meter_id: str, reason: ReadReason, channels: Sequence[Channel] | None = None,
                           key_id: str | None = None) -> SpecialRead: ...
    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]: ...
    def commands_available(self) -> bool: ...
    async def submit_command(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None,
                             reference: str | None = None, idempotency_key: str | None = None,
                             token: str | None = None) -> Submission: ...
    async def get_command(self, correlation_id: str) -> Command: ...
    def poll_intervals(self) -> dict[str, float]: ...


class LocalPort:
    def __init__(self, gateway: InProcess) -> None:
        self.gateway = gateway

    async def readiness(self) -> dict[str, Any]:
        return await self.gateway.readiness()

    async def metrics_text(self) -> bytes:
        return self.gateway.metrics_text()

    async def status(self, *, per_meter: bool = True) -> dict[str, Any]:
        return self.gateway.status(per_meter=per_meter)

    async def fleet(self) -> list[MeterSummary]:
        return self.gateway.fleet()

    async def meter_summary(self, meter_id: str) -> MeterSummary:
        return self.gateway.meter_summary(meter_id)

    async def meter_diagnostics(self, meter_id: str) -> MeterDiagnostics:
        return await self.gateway.meter_diagnostics(meter_id)

    async def recent_payloads(self, meter_id: str) -> list[RecentPayload]:
        return self.gateway.recent_payloads(meter_id)

    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]:
        return await self.gateway.recent_values(meter_id, channel)

    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]:
        return await self.gateway.recent_balances(meter_id)

    async def recent_events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]:
        return await self.gateway.recent_events(meter_id=meter_id, limit=limit)

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]:
        return await self.gateway.deadletters(meter_id=meter_id, reason=reason, limit=limit)

    async def special_read(self, meter_id: str, reason: ReadReason, channels: Sequence[Channel] | None = None,
                           key_id: str | None = None) -> SpecialRead:
        return await self.gateway.special_read(meter_id, reason, channels, key_id)

    async def poll_now(self, meter_id: str) -> PollResult:
        return await self.gateway.poll_now(meter_id)

    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self.gateway.read_raw(target, request)

    def commands_available(self) -> bool:
        return self.gateway.commands_available()

    async def submit_command(self, meter_id: str, kind: CommandKind, amount: Decimal | None = None,
                             reference: str | None = None, idempotency_key: str | None = None,
                             token: str | None = None) -> Submission:
        return await self.gateway.submit_command(meter_id, kind, amount, reference, idempotency_key, token)

    async def get_command(self, correlation_id: str) -> Command:
        return await self.gateway.get_command(correlation_id)

    def poll_intervals(self) -> dict[str, float]:
        return self.gateway.poll_intervals()
