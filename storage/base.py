"""What the rest of the gateway needs from a store: a Sink to write to and a Reader to query.

Both backends (embedded SQLite, TimescaleDB) implement `Store`, and the same tests run
against both. Every write is idempotent on (meter_id, channel, ts) for readings and on
(meter_id, ts) for balance updates: writing the same batch twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    DeadLetter,
    Event,
    EventKind,
    Meter,
    Reading,
)


@dataclass(slots=True)
class WriteResult:
    """What one `write` did. Counts exclude rows that were already stored identically."""

    readings_inserted: int = 0
    readings_duplicate: int = 0
    #: Readings whose key was already stored with a different value: kept once (the
    #: first value wins), reported here so the caller can raise duplicate_conflict.
    conflicts: list[Reading] = field(default_factory=list)
    balances_inserted: int = 0
    events_inserted: int = 0
    deadletters_inserted: int = 0


@dataclass(frozen=True, slots=True)
class LastValue:
    """The last stored cumulative value of a (meter, channel): seeds VEE after a restart."""

    meter_id: str
    channel: Channel
    ts: datetime
    value: float


@runtime_checkable
class Store(Protocol):
    #: Short description of the storage mode, shown in logs and /readyz,
    #: e.g. "sqlite", "timescaledb-apache", "timescaledb-community", "postgresql".
    mode: str

    async def migrate(self) -> None:
        """Apply pending schema migrations (forward-only). Safe to call every start."""

    async def ping(self) -> None:
        """Raise SinkUnavailable if the store cannot be reached now."""

    async def close(self) -> None: ...

    # -- sink --------------------------------------------------------------------
    async def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction. Returns only after it is durable.

        Raises SinkUnavailable when the store is unreachable (retry later), and
        SinkError for anything else.
        """

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters (by meter_id), e.g. from the configuration at start."""

    # -- reader ------------------------------------------------------------------
    async def list_meters(self, *, search: str | None = None, limit: int = 100,
                          after: str | None = None) -> list[Meter]:
        """Meters ordered by meter_id, after the given meter_id; `search` matches meter
        number, device number or consumer number (substring, case-insensitive)."""

    async def get_meter(self, meter_id: str) -> Meter | None: ...

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel of a meter, ordered by channel."""

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None) -> list[Reading]:
        """Readings with start <= ts < end ordered by (ts, channel); keyset `after`
        is the (ts, channel) of the last row of the previous page."""

    async def last_cumulative(self) -> list[LastValue]:
        """Last stored value of every cumulative (meter, channel)."""

    async def latest_balance(self, meter_id: str) -> BalanceUpdate | None: ...

    async def balances(self, meter_id: str, *, start: datetime, end: datetime,
                       limit: int = 1000) -> list[BalanceUpdate]:
        """Balance updates with start <= ts < end, ordered by ts."""

    async def events(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                     limit: int = 100) -> list[Event]:
        """Most recent first."""

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> list[DeadLetter]:
        """Most recent first."""
