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
    Command,
    DeadLetter,
    Event,
    EventKind,
    Meter,
    Reading,
    Status,
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


@dataclass(frozen=True, slots=True)
class FeedPage:
    """A page of the change feed: readings in ingest order, and the cursor to continue from.

    A reading appears again (with a higher seq) whenever its status or value changes
    (verification, an estimate replaced by the real read). `next_after` is the seq to pass
    as `after` next time; it never passes a seq that a still-running transaction could
    yet commit, so a client that stores it gets every change exactly once.
    """

    items: list[Reading]
    next_after: int


@dataclass(frozen=True, slots=True)
class ConsumptionBucket:
    """Consumption of one channel in [start, end): rollover- and gap-aware."""

    start: datetime
    end: datetime
    value: float | None  # None when there is no read to measure from
    first_read: Reading | None  # the read that opens the bucket (last read at or before start)
    last_read: Reading | None  # the read that closes it (last read before end)
    estimated: bool  # an estimated read, or interpolation across a gap, contributed
    suspect: bool  # a suspect or rejected read lies inside the bucket


@dataclass(frozen=True, slots=True)
class BillingRead:
    """Opening and closing read of one meter and channel for a billing period."""

    meter_id: str
    channel: Channel
    start: datetime
    end: datetime
    opening: Reading | None
    closing: Reading | None
    consumption: float | None
    estimated: bool
    suspect: bool
    flags: list[str] = field(default_factory=list)


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

    # -- wave 2 (issues 4, 5, 6); both stores implement these ---------------------
    async def feed(self, *, after: int, limit: int = 1000) -> FeedPage:
        """Readings with seq > after, in seq order, never skipping a row that a concurrent
        writer commits later with a lower seq (see FeedPage)."""

    async def set_status(self, meter_id: str, channel: Channel, ts: datetime, status: Status, *,
                         note: str, by: str) -> Reading:
        """Verify or reject a reading (a person's decision): records it in the verification
        log, gives the reading a new seq so the feed shows it again. NotFound if absent."""

    async def consumption(self, meter_id: str, channel: Channel, *, start: datetime, end: datetime,
                          bucket: str, tz: str = "UTC") -> list[ConsumptionBucket]:
        """Consumption per 'hour' | 'day' | 'month' (bucket boundaries in time zone `tz`) from
        a cumulative channel, correct across rollovers (uses the ROLLOVER flag's modulus
        stored in the reading's note) and gaps; rejected reads are ignored."""

    async def billing_read(self, meter_id: str, channel: Channel, *, start: datetime,
                           end: datetime) -> BillingRead:
        """Opening read: last valid read at or before `start`; closing read: last valid read at
        or before `end`; consumption between them (rollover-aware)."""

    async def cumulative_history(self, *, since: datetime) -> list[Reading]:
        """Cumulative readings with ts >= since ordered by (meter_id, channel, ts): seeds VEE
        windows after a restart."""

    async def save_command(self, command: Command) -> None:
        """Insert or update a PAYG command by correlation_id."""

    async def get_command(self, correlation_id: str) -> Command | None: ...

    async def commands(self, *, meter_id: str | None = None, limit: int = 100) -> list[Command]:
        """Most recent first."""
