"""PAYG commands between the API, the drivers that send them and the store that records them.

A driver that sends commands (`drivers.base.Commanding`) gets the store's records as callbacks
(`CommandPorts`), so it imports neither the runtime nor a store; the API's calls go to the driver
that serves the meter. Which protocol that is, nobody here asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from drivers.base import Commanding, CommandPorts, CommandSender
from gateway.errors import InvalidRequest, NotFound, SinkUnavailable
from gateway.model import Command, CommandKind, Submission
from gateway.runtime.view import GatewayView
from storage.base import Store

log = logging.getLogger(__name__)


class CommandDesk:
    """The gateway's PAYG commands: what the API submits and asks, and what drivers record."""

    def __init__(self, gateway: GatewayView, replied: Callable[[str, datetime | None, datetime], None]) -> None:
        self.gw = gateway
        self._replied = replied

    def ports(self) -> CommandPorts:
        """The store's command records, for the drivers that send commands."""
        return CommandPorts(save=self._save, claim=self._claim, retry_unsent=self._retry_unsent, load=self._load,
                            replied=self._replied)

    def senders(self) -> list[CommandSender]:
        return [d.commands for d in self.gw.drivers if isinstance(d, Commanding) and d.commands is not None]

    def available(self) -> bool:
        """Whether this gateway can send PAYG commands (a driver sends them, and has PAYG meters)."""
        return bool(self.senders())

    async def submit(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None,
                     reference: str | None = None, idempotency_key: str | None = None,
                     token: str | None = None) -> Submission:
        """Publish a top-up, disconnect or reconnect to a PAYG meter and track it, once per key (the
        reference, the idempotency key): a repeat gets the stored command (`replayed`). Returns the
        command PENDING (FAILED if the broker did not confirm it). NotFound (not a PAYG meter),
        InvalidRequest (bad kind or amount, commands off), InvalidField (too many decimals),
        KeyConflict (a key of another command), ConnectionFailed (broker not connected),
        SinkUnavailable (the store cannot record it): in those cases nothing was sent."""
        senders = self.senders()
        if not senders:
            raise InvalidRequest(f"meter {meter_id}: PAYG commands are off (no driver sends them: its protocol is "
                                 "off, no PAYG meters are configured, or its commands are turned off)")
        sender = next((s for s in senders if s.serves(meter_id)), senders[0])  # which says NotFound
        return await sender.submit(meter_id, kind, amount=amount, reference=reference, key=idempotency_key,
                                   token=token)

    async def get(self, correlation_id: str) -> Command:
        """A command's latest status: its sender's if one holds it, else the store's. NotFound."""
        command = next((c for s in self.senders() if (c := s.get(correlation_id)) is not None), None)
        store = self.gw.store
        if command is None and store is not None and self.gw.store_ready.is_set():
            command = await store.get_command(correlation_id)
        if command is None:
            raise NotFound("command", correlation_id)
        return command

    async def restore(self) -> None:
        """Follow this gateway's commands that were still pending when it stopped."""
        senders, store = self.senders(), self.gw.store
        if not senders or store is None:
            return
        try:
            pending = await store.commands(limit=1000)
            restored = sum(s.restore(pending) for s in senders)
        except Exception as exc:  # the gateway runs on without them; their replies are unmatched
            log.warning("pending PAYG commands could not be restored from the store: %s", exc)
            return
        if restored:
            log.info("following %d PAYG commands still pending from before the restart", restored)

    def _ready(self, what: str = ": the command cannot be recorded") -> Store:
        store = self.gw.store
        if store is None or not self.gw.store_ready.is_set():
            raise SinkUnavailable(f"the store is not connected yet{what}")
        return store

    async def _save(self, command: Command) -> None:
        await self._ready().save_command(command)

    async def _claim(self, command: Command) -> list[Command]:
        return await self._ready().claim_command(command)

    async def _retry_unsent(self, correlation_id: str, at: datetime) -> Command | None:
        return await self._ready().retry_unsent_command(correlation_id, at)

    async def _load(self, correlation_id: str) -> Command | None:
        return await self._ready("").get_command(correlation_id)


__all__ = ["CommandDesk"]
