"""RemoteGateway: the API process's view of the core (api.ports.GatewayPort over the control socket).

Every call goes to the running core and returns what the in-process gateway would. While the core
is down (restarting after a crash), readiness says so under the check `core`, and the routes that
need it answer 503 with Retry-After (gateway.errors.CoreUnavailable); routes that read the store
alone keep answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gateway.errors import CoreUnavailable
from gateway.model import BalanceUpdate, Channel, Command, CommandKind, DeadLetter, Event, Reading, Submission
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RecentPayload
from gateway.model.reads import ReadReason, SpecialRead
from gateway.runtime.control import CoreClient
from storage.base import Store

log = logging.getLogger(__name__)


class RemoteGateway:
    """GatewayPort for an API process: asks the core at `client`; `store` only names its mode."""

    def __init__(self, client: CoreClient, store: Store) -> None:
        self.client = client
        self.store = store
        #: What does not change while the core runs (its configuration's): asked once it answers.
        self._intervals: dict[str, float] = {}
        self._commands = False

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.client.call(name, *args, **kwargs)
        except (OSError, TimeoutError) as exc:
            msg = f"the gateway's core process is not answering (starting or restarting): {exc}"
            raise CoreUnavailable(msg) from None

    async def hello(self) -> bool:
        """Ask the core for its fixed facts; False while it does not answer."""
        try:
            facts = await self.client.call("hello", timeout=10)
        except (OSError, TimeoutError):
            return False
        self._intervals = dict(facts["poll_intervals"])
        self._commands = bool(facts["commands_available"])
        return True

    async def keep_hello(self, every: float = 1.0) -> None:
        """Until the core has answered once (the facts are the configuration's: once is enough)."""
        while not await self.hello():  # noqa: ASYNC110 - a peer process to poll, no event to wait on
            await asyncio.sleep(every)

    # -- readiness and metrics ---------------------------------------------------------------------
    async def readiness(self) -> dict[str, Any]:
        try:
            body: dict[str, Any] = await self.client.call("readiness", timeout=10)
        except (OSError, TimeoutError) as exc:
            detail = f"the core process is not answering (starting or restarting): {exc}"
            return {"ready": False, "failed": ["core"], "checks": {"core": {"ok": False, "detail": detail}},
                    "storage_mode": self.store.mode}
        body = dict(body)
        body["checks"] = {**body["checks"], "core": {"ok": True, "detail": "answering"},
                          "api": {"ok": True, "detail": "answering"}}
        return body

    async def metrics_text(self) -> bytes:
        got: bytes = await self._call("metrics_text")
        return got

    async def status(self, *, per_meter: bool = True) -> dict[str, Any]:
        got: dict[str, Any] = await self._call("status", per_meter=per_meter)
        return got

    # -- diagnostics -------------------------------------------------------------------------------
    async def fleet(self) -> list[MeterSummary]:
        got: list[MeterSummary] = await self._call("fleet")
        return got

    async def meter_summary(self, meter_id: str) -> MeterSummary:
        got: MeterSummary = await self._call("meter_summary", meter_id)
        return got

    async def meter_diagnostics(self, meter_id: str) -> MeterDiagnostics:
        got: MeterDiagnostics = await self._call("meter_diagnostics", meter_id)
        return got

    async def recent_payloads(self, meter_id: str) -> list[RecentPayload]:
        got: list[RecentPayload] = await self._call("recent_payloads", meter_id)
        return got

    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]:
        got: tuple[list[Reading], bool] = await self._call("recent_values", meter_id, channel)
        return got

    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]:
        got: tuple[list[BalanceUpdate], bool] = await self._call("recent_balances", meter_id)
        return got

    async def recent_events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]:
        got: tuple[list[Event], bool] = await self._call("recent_events", meter_id=meter_id, limit=limit)
        return got

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]:
        got: tuple[list[DeadLetter], bool] = await self._call("deadletters", meter_id=meter_id, reason=reason,
                                                              limit=limit)
        return got

    async def special_read(self, meter_id: str, reason: ReadReason, channels: Sequence[Channel] | None = None,
                           key_id: str | None = None) -> SpecialRead:
        got: SpecialRead = await self._call("special_read", meter_id, reason,
                                            None if channels is None else list(channels), key_id)
        return got

    async def poll_now(self, meter_id: str) -> PollResult:
        got: PollResult = await self._call("poll_now", meter_id)
        return got

    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        got: Mapping[str, Any] = await self._call("read_raw", target, dict(request))
        return got

    # -- the account-system API --------------------------------------------------------------------
    def commands_available(self) -> bool:
        return self._commands

    async def submit_command(self, meter_id: str, kind: CommandKind, amount: Decimal | None = None,
                             reference: str | None = None, idempotency_key: str | None = None,
                             token: str | None = None) -> Submission:
        got: Submission = await self._call("submit_command", meter_id, kind, amount, reference, idempotency_key,
                                           token)
        return got

    async def get_command(self, correlation_id: str) -> Command:
        got: Command = await self._call("get_command", correlation_id)
        return got

    def poll_intervals(self) -> dict[str, float]:
        return self._intervals
