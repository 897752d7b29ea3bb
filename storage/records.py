"""The values the stores hand back and take: write results, pages, billing reads, fleet counts and the
account-registry records, plus the conflicts a registry change can raise. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from gateway.errors import InvalidRequest
from gateway.model import (
    Channel,
    Event,
    MeterStatus,
    Reading,
    Status,
    Utility,
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
    #: Stored estimates (source=estimate) replaced by the real reading of their key; the
    #: replaced rows get a new seq, so the change feed shows them again.
    readings_replaced: int = 0


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
    """Consumption of one channel in [start, end): rollover- and gap-aware (the rules are in
    storage.consumption)."""

    start: datetime
    end: datetime
    value: float | None  # None when there is no read to measure from, or none inside the bucket
    #: The read that opens the bucket: the boundary read at `start`, or the first billable
    #: read after it when there is none at or before it (`opening_after_start`).
    first_read: Reading | None
    #: The read that closes it: the boundary read at `end` (at now for a bucket that ends
    #: later), so a read exactly on a boundary closes one bucket and opens the next, and the
    #: buckets add up to the total.
    last_read: Reading | None
    estimated: bool  # the opening or the closing read is an estimate
    suspect: bool  # a suspect or rejected read lies inside, a rollover without a modulus, or a negative value
    gap: bool = False  # a read flagged GAP lies between the opening and the closing read
    opening_after_start: bool = False  # no billable read at or before start: first_read is the first after it
    complete: bool = True  # False while the bucket has not ended (its end is after now)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one `apply_retention` did: which mechanism, the cut-off, rows or chunks removed."""

    mode: str  # "policy" (TimescaleDB community jobs), "drop_chunks", "delete" or "off"
    cutoff: datetime | None
    removed: dict[str, int] = field(default_factory=dict)  # table -> rows (delete) or chunks (drop_chunks)


@dataclass(frozen=True, slots=True)
class ReorderResult:
    """What one `reorder` did: which mechanism, the chunks rewritten in (meter_id, channel,
    ts) order, the ones skipped because readers or writers held them (or the database
    refused, logged), and how many closed chunks are still in arrival order (left for the
    next run)."""

    mode: str  # "cluster" (the gateway's own, Apache), "policy" (TimescaleDB community) or "off"
    reordered: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()
    left: int = 0


@dataclass(frozen=True, slots=True)
class BillingRead:
    """Opening and closing read of one meter and channel for a billing period (the rules are in
    storage.consumption)."""

    meter_id: str
    channel: Channel
    start: datetime
    end: datetime
    opening: Reading | None
    closing: Reading | None
    consumption: float | None
    estimated: bool  # the opening or the closing read is an estimate
    suspect: bool
    #: Sorted names of what the period's reads show: statuses (suspect, rejected,
    #: estimated), VEE quality flags, and opening_after_start (the keys of `flag_counts`).
    flags: list[str] = field(default_factory=list)
    #: How many reads of the period show each flag (opening_after_start: 1).
    flag_counts: dict[str, int] = field(default_factory=dict)
    opening_after_start: bool = False  # no billable read at or before start: `opening` is the first after it
    complete: bool = True  # False while the period has not ended (measured up to now)
    as_of: datetime | None = None  # ts of the newest read used (the closing read)


class Conflict(InvalidRequest):
    """The request contradicts what is stored (a meter that already exists, a consumer
    number that was deactivated, an assignment before the current one)."""


@dataclass(frozen=True, slots=True)
class DeviceNumberClash:
    """`meter_id` (None: not known) asked for a device number that meter `holder` of the same
    utility has: device numbers are unique per utility."""

    meter_id: str | None
    utility: Utility
    device_number: str
    holder: str

    def __str__(self) -> str:
        who = f"meter {self.meter_id}: " if self.meter_id else ""
        return (f"{who}device_number {self.device_number!r} ({self.utility.value}) is already on meter "
                f"{self.holder}: give this meter another one, or clear it there first "
                f"(PATCH /v1/meters/{self.holder} with device_number null)")


class DeviceNumberTaken(Conflict):
    """Device numbers another meter of the same utility has; `clashes` says which and whose."""

    def __init__(self, clashes: Sequence[DeviceNumberClash]) -> None:
        self.clashes = tuple(clashes)
        shown = "; ".join(str(c) for c in self.clashes[:10])
        more = f"; and {len(self.clashes) - 10} more" if len(self.clashes) > 10 else ""
        super().__init__(shown + more)


@dataclass(frozen=True, slots=True)
class TakenIdentifiers:
    """Of the identifiers asked about: the meter ids that exist, and the meter that holds each
    (utility, device number) (a Utility is a str: look up with the member or its value)."""

    meter_ids: frozenset[str]
    devices: dict[tuple[str, str], str]


@dataclass(frozen=True, slots=True)
class SharedDeviceNumber:
    """A device number on several meters of one utility, kept from a store written before
    device numbers were unique (migration "device_numbers_and_verification_keys"): the first
    meter holds it, the others are exempt from the rule until their device number changes."""

    utility: Utility
    device_number: str
    meter_ids: tuple[str, ...]  # in order of registration; the first holds it


#: StatusChange.action: a person's verdict, a person's corrected value, an estimate the real read replaced.
VERDICT, EDIT, ESTIMATE_REPLACED = "verdict", "edit", "estimate_replaced"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One entry of a reading's audit trail: a person's verdict or edit, or an estimate the real read
    replaced; when, why, by whom (the key) and what it was before."""

    id: int  # the keyset of history pages
    at: datetime
    previous: Status | None
    status: Status
    note: str | None
    by: str | None  # the key's name ("api key <id> (<name>)" for verdicts stored before key_id)
    key_id: str | None  # None for verdicts stored before the key was recorded
    action: str = VERDICT  # VERDICT | EDIT | ESTIMATE_REPLACED
    previous_value: float | None = None  # the value it replaced (EDIT, ESTIMATE_REPLACED)
    value: float | None = None  # the value after (EDIT, ESTIMATE_REPLACED)
    rule: str | None = None  # the rule or method of the previous value (a replaced estimate's note)
    recorded_at: datetime | None = None  # when the previous value was recorded (ESTIMATE_REPLACED)


@dataclass(frozen=True, slots=True)
class ReadingOrigin:
    """A reading and what it was when first recorded (its trail may have changed both since)."""

    reading: Reading  # as it is now
    value: float  # the value first recorded (before any edit)
    status: Status  # the status first recorded (before any verdict)
    #: The trail's first change of value (an edit, a replaced estimate): its previous value, rule and
    #: recorded_at describe the reading as first recorded. None while the value never changed.
    first_change: StatusChange | None = None


@dataclass(frozen=True, slots=True)
class SilentRule:
    """When an active meter counts as silent: no reading or balance update since `now` minus
    its own `after` (meters this gateway polls) or `default_after` (the rest). Only data at or
    after `since` is looked at (a meter quiet for longer shows last_seen None)."""

    now: datetime
    since: datetime
    default_after: timedelta
    after: Mapping[str, timedelta] = field(default_factory=dict)

    def after_of(self, meter_id: str) -> timedelta:
        return self.after.get(meter_id, self.default_after)


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """The registry counted: meters, meters by status, silent meters (see SilentRule)."""

    meters: int
    by_status: dict[MeterStatus, int]
    silent: int


#: Meter fields `update_meter` may change; the consumer number changes only through
#: assignments, the identity and wiring (meter_id, utility, protocol) never.
UPDATABLE_METER_FIELDS = frozenset({"device_number", "model", "address", "payg", "status", "installed_at",
                                    "location", "tags"})
#: Meters `create_meters` writes per statement; between batches the event loop runs others.
CREATE_BATCH = 500
#: Meter fields the configuration file always decides; the rest it decides only where it
#: sets them, so what the API changed survives a restart (see `Store.sync_meters`).
CONFIG_OWNED_FIELDS = frozenset({"utility", "protocol", "address", "model", "payg"})


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer number (an account): active until deactivated; its history stays."""

    consumer_number: str
    active: bool
    created_at: datetime
    deactivated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its store-wide `seq` (the tie-breaker of event pages)."""

    seq: int
    event: Event


@dataclass(frozen=True, slots=True)
class PaygTotals:
    """The PAYG fleet in one currency, from each meter's latest balance update."""

    currency: str
    meters: int
    total_balance: Decimal
    low_credit: int
    emergency_credit: int  # meters using emergency credit now
    credit_exhausted: int
    disconnected: int
    total_debt: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class MeterActivity:
    """What the fleet summary needs of one meter: its status and when it last sent data."""

    meter_id: str
    status: MeterStatus
    utility: Utility
    payg: bool
    last_seen: datetime | None  # newest reading or balance update ts since the `since` asked for


def cumulative_channel(utility: Utility) -> Channel:
    """The register a meter of `utility` is billed from: move-in and move-out reads use it."""
    return {Utility.ELECTRICITY: Channel.ENERGY_IMPORT, Utility.WATER: Channel.VOLUME,
            Utility.GAS: Channel.VOLUME, Utility.HEAT: Channel.HEAT_ENERGY}[utility]
