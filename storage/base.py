"""What the rest of the gateway needs from a store: a Sink to write to, a Reader to query and a
Registry to keep meters, keys and assignments in (the API depends on Reader and Registry only).

Both backends (embedded SQLite, TimescaleDB) implement `Store`, and the same tests run
against both. Every write is idempotent on (meter_id, channel, ts) for readings and on
(meter_id, ts) for balance updates: writing the same batch twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from gateway.model import (
    Assignment,
    BalanceUpdate,
    Batch,
    Channel,
    Command,
    DeadLetter,
    Event,
    EventKind,
    Meter,
    MeterStatus,
    Reading,
    Status,
    Utility,
)
from gateway.model.reads import SpecialRead
from storage.keys import ApiKey
from storage.records import (
    BillingRead,
    Consumer,
    ConsumptionBucket,
    DeviceNumberClash,
    FeedPage,
    FleetCounts,
    LastValue,
    MeterActivity,
    PaygTotals,
    ReadingOrigin,
    ReorderResult,
    RetentionResult,
    SharedDeviceNumber,
    SilentRule,
    StatusChange,
    StoredEvent,
    TakenIdentifiers,
    WriteResult,
)


class Sink(Protocol):
    """The write path: batches from the pipeline, the configured meters at start."""

    async def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction. Returns only after it is durable.

        Raises SinkUnavailable when the store is unreachable (retry later), and
        SinkError for anything else.
        """

    async def upsert_meters(self, meters: Sequence[Meter]) -> None:
        """Create or update meters (by meter_id), e.g. from the configuration at start."""


class Reader(Protocol):
    """What the API and the runtime read: meters, readings, balances, events, the feed,
    consumption and bills, commands, fleet summaries; and whether the store answers now."""

    #: Short description of the storage mode, shown in logs and /readyz,
    #: e.g. "sqlite", "timescaledb-apache", "timescaledb-community", "postgresql".
    mode: str

    async def ping(self) -> None:
        """Raise SinkUnavailable if the store cannot be reached now."""

    async def list_meters(self, *, search: str | None = None, limit: int = 100, after: str | None = None,
                          status: MeterStatus | None = None, utility: Utility | None = None,
                          payg: bool | None = None, consumer_number: str | None = None) -> list[Meter]:
        """Meters ordered by meter_id, after the given meter_id; `search` matches meter
        number, device number or consumer number (substring, case-insensitive); the other
        filters are exact."""

    async def get_meter(self, meter_id: str) -> Meter | None: ...

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel of a meter, ordered by channel."""

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None, status: Status | None = None) -> list[Reading]:
        """Readings with start <= ts < end ordered by (ts, channel); keyset `after`
        is the (ts, channel) of the last row of the previous page; `status` filters."""

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

    async def feed(self, *, after: int, limit: int = 1000) -> FeedPage:
        """Readings with seq > after, in seq order, never skipping a row that a concurrent
        writer commits later with a lower seq (see FeedPage)."""

    async def reading_history(self, meter_id: str, channel: Channel, ts: datetime, *, limit: int = 100,
                              after: int | None = None) -> list[StatusChange]:
        """The reading's audit trail (storage.trail: verdicts, edits, replaced estimates), oldest
        first, after the entry with id `after`. NotFound if there is no such reading."""

    async def consumption(self, meter_id: str, channel: Channel, *, start: datetime, end: datetime,
                          bucket: str, tz: str = "UTC", now: datetime | None = None) -> list[ConsumptionBucket]:
        """Consumption per 'hour' | 'day' | 'month' (bucket boundaries in time zone `tz`) from
        a cumulative channel, by the rules of storage.consumption (the same reads as bills;
        rollovers, gaps, no read taken from after `now`, default the store's clock). Buckets
        cover [start, end) widened to whole buckets. InvalidRequest for an unknown bucket or
        zone, a channel that is not cumulative, or too many buckets; InvalidPeriod for a
        period that is reversed or starts at or after now."""

    async def billing_read(self, meter_id: str, channel: Channel, *, start: datetime,
                           end: datetime, now: datetime | None = None) -> BillingRead:
        """Opening and closing read of the period and the consumption between them, by the
        rules of storage.consumption: the boundary read at each end (last real billable read,
        an estimate only where no real read lies within the store's estimate window), the
        first read after `start` when none is at or before it, flags with counts of the
        period's reads; `complete` False (measured up to now) when `end` is after `now`.
        InvalidPeriod when `end` is before `start` or `start` is at or after now."""

    async def cumulative_history(self, *, since: datetime) -> list[Reading]:
        """Cumulative readings with ts >= since ordered by (meter_id, channel, ts): seeds VEE
        windows after a restart."""

    async def get_command(self, correlation_id: str) -> Command | None: ...

    async def get_special_read(self, correlation_id: str) -> SpecialRead | None: ...

    async def special_reads(self, meter_id: str, *, start: datetime, end: datetime) -> list[SpecialRead]:
        """The meter's completed or partial special reads whose readings lie in [start, end), by time."""

    async def open_special_reads(self, meter_id: str) -> list[SpecialRead]:
        """The meter's special reads still queued or in progress."""

    async def commands(self, *, meter_id: str | None = None, limit: int = 100,
                       before: tuple[datetime, str] | None = None) -> list[Command]:
        """Most recent first, keyset-paginated: `before` is the (created_at, correlation_id) of
        the last command of the previous page."""

    async def events_page(self, *, meter_id: str | None = None, kind: EventKind | None = None,
                          start: datetime | None = None, end: datetime | None = None, limit: int = 100,
                          before: tuple[datetime, int] | None = None) -> list[StoredEvent]:
        """Events with start <= ts < end, most recent first, keyset-paginated: `before` is
        the (ts, seq) of the last event of the previous page."""

    async def payg_totals(self) -> list[PaygTotals]:
        """Per currency, the sum over PAYG meters of their latest balance update."""

    async def meter_activity(self, *, since: datetime) -> list[MeterActivity]:
        """Every registered meter, by meter_id, with its newest reading or balance ts at or
        after `since` (None: nothing since)."""

    async def fleet_counts(self, rule: SilentRule) -> FleetCounts:
        """Meters, meters by status and silent meters, counted by the database."""

    async def silent_meters(self, rule: SilentRule, *, limit: int = 100,
                            after: str | None = None) -> list[MeterActivity]:
        """Active meters silent by `rule`, ordered by meter_id, after the given meter_id."""


class Registry(Protocol):
    """The registry the API keeps: API keys, meters, assignments and consumers, verdicts on
    readings, PAYG commands."""

    async def create_api_key(self, key: ApiKey) -> None:
        """Store a new key (its hash only). Conflict if the id is taken."""

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key with this public id, revoked or not; None if unknown."""

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        """Mark the key revoked (idempotent: the first revocation time stays). NotFound."""

    async def create_meters(self, meters: Sequence[Meter], *, at: datetime) -> None:
        """Create meters, all or none (Conflict naming the meter_ids that exist,
        DeviceNumberTaken for a device number another meter of the utility has or two of
        `meters` share). A meter with a consumer_number gets an open assignment from its
        installed_at (else `at`). Many meters are written in batches of CREATE_BATCH inside
        one transaction, handing the event loop back between batches."""

    async def update_meter(self, meter_id: str, changes: Mapping[str, Any], *, at: datetime) -> Meter:
        """Change the given fields (names in UPDATABLE_METER_FIELDS; None clears an optional
        one). NotFound, InvalidRequest for another field, DeviceNumberTaken; Conflict for an
        installed_at after some of the meter's readings (the message counts them) or after the
        start of one of its assignments."""

    async def deactivate_meter(self, meter_id: str, *, at: datetime) -> Meter:
        """Status inactive; its open assignment is closed at `at` with its closing read.
        Readings and assignment history stay. NotFound."""

    async def sync_meters(self, meters: Sequence[tuple[Meter, frozenset[str]]], *,
                          at: datetime) -> list[DeviceNumberClash]:
        """The configuration's meters, each with the names of the fields its file sets: new
        meters are created; existing ones get CONFIG_OWNED_FIELDS and the fields the file
        sets, and keep what the API changed. A consumer_number from the file opens an
        assignment only for a meter that never had one. A device number that another meter of
        the utility holds is not taken (the meter keeps what it had, a new one gets none): the
        clashes are returned for the caller to log; never raised."""

    async def assign_meter(self, meter_id: str, consumer_number: str, *, start: datetime,
                           at: datetime) -> Assignment:
        """Move-in: the meter's open assignment (if any) ends at `start`; the boundary read of
        the meter's billing channel at `start` is its closing read and the new assignment's
        opening read (the same read). NotFound (meter), Conflict (deactivated consumer,
        `start` not after the open assignment's start, same consumer already, `start` before
        the meter's installed_at)."""

    async def assignments(self, *, meter_id: str | None = None, consumer_number: str | None = None,
                          reads: bool = True) -> list[Assignment]:
        """Assignments ordered by (start, meter_id), each with its opening and closing read
        derived from the readings now (storage.consumption's rule); `reads=False` leaves
        them out (one probe less per assignment, for callers that need only the links)."""

    async def get_consumer(self, consumer_number: str) -> Consumer | None:
        """A consumer number that has (had) an assignment; None if never seen."""

    async def deactivate_consumer(self, consumer_number: str, *, at: datetime) -> Consumer:
        """Close the consumer's open assignments at `at` (closing reads as on move-out) and
        refuse new ones. Idempotent. NotFound if never seen."""

    async def taken_identifiers(self, meter_ids: Sequence[str],
                                devices: Sequence[tuple[str, str]]) -> TakenIdentifiers:
        """Which of `meter_ids` exist, and which meter holds each of `devices`, (utility, device
        number) pairs (a Utility is a str: its value or the member itself)."""

    async def installation_dates(self, meter_ids: Sequence[str]) -> dict[str, datetime]:
        """The installed_at of those of `meter_ids` that have one (the API sets it), one statement
        whatever their number: the runtime's installation floors (gateway/runtime/installed.py)."""

    async def shared_device_numbers(self) -> list[SharedDeviceNumber]:
        """Device numbers on more than one meter of a utility (only a store upgraded from
        before they were unique can hold them), by utility and device number."""

    async def set_status(self, meter_id: str, channel: Channel, ts: datetime, status: Status, *,
                         note: str, by: str, key_id: str | None = None) -> Reading:
        """Verify or reject a reading (a person's decision): records it in the verification
        log (note, `by` and the API key's id), gives the reading a new seq so the feed shows
        it again. A verdict the reading already has changes nothing (same seq, no log entry).
        NotFound if absent."""

    async def edit_reading(self, meter_id: str, channel: Channel, ts: datetime, value: float, *,
                           note: str, by: str, key_id: str | None = None) -> Reading:
        """A person's corrected value (storage.trail): the reading gets `value`, status EDITED and
        a new seq (the feed shows it once); the verification log keeps the value and status it had,
        the note, `by` and the key's id. The value and status it has already change nothing.
        NotFound if absent, InvalidField('value') for a value that is not finite; nothing stored then."""

    async def reading_origin(self, meter_id: str, channel: Channel, ts: datetime) -> ReadingOrigin:
        """The reading now, and its value and status as first recorded. NotFound if absent."""

    async def save_command(self, command: Command) -> None:
        """Insert or update a PAYG command by correlation_id."""

    async def save_special_read(self, read: SpecialRead) -> None:
        """Insert or update a special read by correlation_id."""

    async def claim_command(self, command: Command) -> list[Command]:
        """Store a new PENDING command under its keys (its reference, its idempotency key; each
        unique in the store), or, if another command holds one of them, store nothing and return
        the commands that hold them (the reference's first). One transaction: of claims that race
        for a key, on this gateway or on others sharing the store, exactly one stores."""

    async def retry_unsent_command(self, correlation_id: str, at: datetime) -> Command | None:
        """The command PENDING again (updated at `at`) if it is FAILED and unsent (nothing of it
        reached the broker); None otherwise. Of calls that race, at most one gets it."""


@runtime_checkable
class Store(Sink, Reader, Registry, Protocol):
    """A whole store: Sink + Reader + Registry, and its lifecycle (migrations, retention, close)."""

    async def migrate(self, *, upto: int | None = None) -> None:
        """Apply pending schema migrations (forward-only). Safe to call every start.
        `upto`: stop after that version (to build a store as an older release left it)."""

    async def close(self) -> None: ...

    async def apply_retention(self, now: datetime | None = None) -> RetentionResult:
        """Remove readings, balances, events and dead letters older than the configured
        retention. The runtime calls it periodically; a no-op ("off") without retention,
        and under TimescaleDB's community license (its own policy job does the work)."""

    async def reorder(self, now: datetime | None = None, *, budget: float | None = 60.0) -> ReorderResult:
        """Rewrite closed stretches of readings in (meter_id, channel, ts) order, so that one
        meter's month is a few pages instead of thousands (readings arrive interleaved by
        meter). The runtime calls it with the retention run when `storage.reorder_chunks`
        is on; no new chunk is started after `budget` seconds (None: until done) and the next
        run goes on. "off" where the store has nothing to do (SQLite, plain PostgreSQL);
        "policy" under TimescaleDB's community license, whose reorder policy does it."""
