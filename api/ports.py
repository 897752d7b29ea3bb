"""What the API needs from the running gateway (implemented by gateway.runtime)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from gateway.model import BalanceUpdate, Channel, Command, CommandKind, DeadLetter, Event, Reading, Submission
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RecentPayload
from gateway.model.reads import ReadReason, SpecialRead


class GatewayPort(Protocol):
    """What the API asks the gateway: in its own process (gateway.runtime.gateway.Gateway) or, under
    `meter-gateway run`, over the core's control socket (gateway.runtime.remote.RemoteGateway). So
    everything that reads live state is async; only facts fixed by the configuration are plain calls."""

    async def readiness(self) -> dict[str, Any]:
        """{'ready': bool, 'failed': [name], 'checks': {name: {'ok': bool, 'detail': str}}, 'storage_mode': str}"""

    async def metrics_text(self) -> bytes:
        """Prometheus text exposition of the gateway's metrics."""

    async def status(self, *, per_meter: bool = True) -> dict[str, Any]:
        """Gateway status for technicians: drivers, spool, sink, counters, version, uptime
        (the fields of api.schemas.diag.GatewayStatusOut)."""

    # -- technicians' diagnostics (issue 8); NotFound for a meter not in the configuration --
    async def fleet(self) -> list[MeterSummary]:
        """Every configured meter with its state, worst first."""

    async def meter_summary(self, meter_id: str) -> MeterSummary: ...

    async def meter_diagnostics(self, meter_id: str) -> MeterDiagnostics: ...

    async def recent_payloads(self, meter_id: str) -> list[RecentPayload]:
        """The last MQTT payloads of a meter, newest last."""

    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]:
        """One channel of a meter over its last polls, oldest first (what the status page charts)."""

    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]:
        """A PAYG meter's recent balance updates, oldest first."""

    async def recent_events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]:
        """Latest events, newest first, and whether the store answered (else: this process's memory only)."""

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]:
        """Dead letters, newest first, and whether the store answered."""

    async def special_read(self, meter_id: str, reason: ReadReason, channels: Sequence[Channel] | None = None,
                           key_id: str | None = None) -> SpecialRead:
        """Queue a special read (taken now, stored as a real reading with its reason). NotFound (not
        a meter of this gateway), Conflict (inactive, or a read of it already under way), InvalidRequest."""

    async def poll_now(self, meter_id: str) -> PollResult:
        """Poll a meter at once and decode it (not stored). InvalidRequest (a meter that pushes, or
        inactive), DriverError."""

    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """A raw read on a link: a Modbus endpoint's registers ({"unit", "function", "address",
        "count"} -> {"words"}, FC 03/04, 1..125). NotFound (no such link, or its driver has no raw
        reads), InvalidRequest, DriverError."""

    # -- the account-system API (issue 7) -------------------------------------------------
    def commands_available(self) -> bool:
        """Whether PAYG commands can be sent (MQTT with commands enabled)."""

    async def submit_command(self, meter_id: str, kind: CommandKind, amount: Decimal | None = None,
                             reference: str | None = None, idempotency_key: str | None = None,
                             token: str | None = None) -> Submission:
        """Publish a PAYG command once per key (its reference, the idempotency key) and track it; a
        repeat gets the stored command (`replayed`). NotFound, InvalidRequest, InvalidField,
        KeyConflict, ConnectionFailed, SinkUnavailable."""

    async def get_command(self, correlation_id: str) -> Command:
        """A command's latest status. NotFound."""

    def poll_intervals(self) -> dict[str, float]:
        """Seconds between polls of each configured polled meter."""
