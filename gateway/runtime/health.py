"""Per-meter health for technicians: what the pipeline saw, joined with the drivers' own counters.

`HealthBook.observe` is the pipeline's after-commit hook: it sees every driver sample and the
batch it became, so it learns what the drivers alone cannot tell (the readings and their flags,
the dead letters a meter produced, when an error happened, latencies for p95) without a second
path through the stages. Everything is bounded per meter (deques, one latency window), and
`observe` does O(items) dictionary work, so it costs little next to the spool commit it follows.

The drivers stay the source of truth for communication state (comm_lost, consecutive failures,
breaker); the book adds time and context. Snapshots (`gateway.model.health`) are copies.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drivers.base import LatencyWindow, MeterHealth
from gateway.model import BalanceUpdate, Batch, DeadLetter, Event, EventKind, Reading, Severity
from gateway.model.health import (
    SEVERITY_ORDER,
    MeterDiagnostics,
    MeterState,
    MeterSummary,
    RawBlock,
    RecentPayload,
)
from gateway.model.samples import PollFailure, RawObjects, RawPayload, RawRegisters

#: An event of the key kind stays open until a later event of one of the value kinds (same meter).
CLOSED_BY: dict[EventKind, frozenset[EventKind]] = {
    EventKind.COMM_LOST: frozenset({EventKind.COMM_RESTORED}),
    EventKind.RELAY_DISCONNECTED: frozenset({EventKind.RELAY_CONNECTED}),
    EventKind.LOW_CREDIT: frozenset({EventKind.TOPUP}),
    EventKind.CREDIT_EXHAUSTED: frozenset({EventKind.TOPUP}),
    EventKind.EMERGENCY_CREDIT: frozenset({EventKind.TOPUP}),
    EventKind.SPOOL_BLOCKED: frozenset({EventKind.SPOOL_RESUMED}),
}
#: Kinds that report that something ended: never open themselves.
CLOSING_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.COMM_RESTORED, EventKind.RELAY_CONNECTED, EventKind.TOPUP, EventKind.SPOOL_RESUMED}
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WatchedMeter:
    """A configured meter as diagnostics know it."""

    meter_id: str
    protocol: str  # the driver's, as configured ("modbus", "mqtt", ...)
    where: str  # "endpoint (address) unit 3", the topic, ...
    endpoint: str | None = None  # the link a polled meter shares (a bus); None for a meter that pushes
    unit: int | None = None
    active: bool = True
    interval: float | None = None  # seconds between polls
    balances: bool = False  # it reports PAYG balances

    @property
    def polled(self) -> bool:
        """Its driver polls it on a link (its state comes from the driver's health); else it
        pushes (its state comes from what it sent, and when)."""
        return self.endpoint is not None


class RateWindow:
    """Occurrences per second over the last `span` seconds, counted in one-second buckets."""

    __slots__ = ("_buckets", "_monotonic", "_span", "_started")

    def __init__(self, span: int = 60, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._span = span
        self._monotonic = monotonic
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self._started = monotonic()

    def add(self, n: int = 1) -> None:
        now = int(self._monotonic())
        if self._buckets and self._buckets[-1][0] == now:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([now, n])
        self._trim(now)

    def rate(self) -> float:
        """Per second over the window (over the time since start while that is shorter)."""
        now_f = self._monotonic()
        self._trim(int(now_f))
        seconds = min(float(self._span), max(1.0, now_f - self._started))
        return sum(c for _, c in self._buckets) / seconds

    def _trim(self, now: int) -> None:
        while self._buckets and self._buckets[0][0] <= now - self._span:
            self._buckets.popleft()


@dataclass(slots=True)
class _Book:
    """What the book keeps of one meter (mutable; handed out only as snapshots)."""

    meter: WatchedMeter
    readings: deque[Reading]
    balances: deque[BalanceUpdate]
    events: deque[Event]
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    last_raw: tuple[RawBlock, ...] = ()
    last_raw_at: datetime | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_at: datetime | None = None
    failing_since: datetime | None = None
    #: The last poll answered but its words could not all be decoded (garbage registers).
    decode_failing: bool = False
    messages: int = 0
    bad_messages: int = 0
    last_message_at: datetime | None = None
    last_message_ok: bool | None = None
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    last_balance: BalanceUpdate | None = None


class HealthBook:
    """Keeps, per configured meter, what diagnostics show; see the module docstring."""

    def __init__(
        self,
        meters: Sequence[WatchedMeter],
        *,
        recent_readings: int = 50,
        recent_events: int = 20,
        recent_deadletters: int = 200,
        silent_after: float = 3600.0,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.started_at = clock()
        self.silent_after = silent_after
        self._books: dict[str, _Book] = {
            m.meter_id: _Book(m, deque(maxlen=recent_readings), deque(maxlen=recent_readings),
                              deque(maxlen=recent_events))
            for m in meters
        }
        #: Fleet-wide, newest last: events and dead letters seen since start (the store has them all,
        #: but it may be down, and a technician then needs them most).
        self.events: deque[Event] = deque(maxlen=max(recent_events * 5, 100))
        self.deadletters: deque[DeadLetter] = deque(maxlen=recent_deadletters)
        self.poll_rates: dict[str, RateWindow] = {}  # by endpoint
        self.poll_errors: dict[str, Counter[str]] = {}  # by endpoint: error kind -> count
        self.message_rate = RateWindow(monotonic=monotonic)
        self.message_errors: Counter[str] = Counter()  # dead-letter reason of pushed messages -> count
        for m in meters:
            if m.endpoint is not None and m.endpoint not in self.poll_rates:
                self.poll_rates[m.endpoint] = RateWindow(monotonic=monotonic)
                self.poll_errors[m.endpoint] = Counter()

    # -- what the drivers' status shows (drivers.base.Observed) -----------------------------------
    def polls_per_second(self, endpoint: str) -> float:
        """Polls per second on an endpoint over the last minute (failed ones too)."""
        window = self.poll_rates.get(endpoint)
        return window.rate() if window is not None else 0.0

    def poll_failures(self, endpoint: str) -> dict[str, int]:
        """Failed polls on an endpoint since start, by kind."""
        return dict(self.poll_errors.get(endpoint, {}))

    def messages_per_second(self) -> float:
        """Pushed messages per second over the last minute."""
        return self.message_rate.rate()

    def message_failures(self) -> dict[str, int]:
        """Pushed messages that became dead letters since start, by reason."""
        return dict(self.message_errors)

    @property
    def meters(self) -> list[WatchedMeter]:
        return [b.meter for b in self._books.values()]

    def watched(self, meter_id: str) -> WatchedMeter | None:
        book = self._books.get(meter_id)
        return book.meter if book is not None else None

    # -- feeding (the pipeline's after-commit hook) -------------------------------------------
    def observe(self, items: Iterable[object], batch: Batch) -> None:
        """Take in one pipeline pass: the driver samples and the batch they became (committed)."""
        now = self._clock()
        # The normaliser stamps a sample's dead letters with the sample's received_at, so
        # (meter, time) tells which poll or message produced which, even with several per pass.
        dead: dict[tuple[str | None, datetime], DeadLetter] = {}
        for d in batch.deadletters:
            self.deadletters.append(d)
            dead[(d.meter_id, d.ts)] = d
        for item in items:
            if isinstance(item, RawRegisters):
                self._polled(item, dead.get((item.meter_id, item.received_at)))
            elif isinstance(item, PollFailure):
                self._poll_failed(item, now)
            elif isinstance(item, RawPayload):
                self._message(item, dead.get((item.meter_id, item.received_at)))
            elif isinstance(item, RawObjects):
                self._readout(item, dead.get((item.meter_id, item.received_at)))
        for reading in batch.readings:
            book = self._books.get(reading.meter_id)
            if book is not None:
                book.readings.append(reading)
        for balance in batch.balances:
            book = self._books.get(balance.meter_id)
            if book is not None:
                book.last_balance = balance
                book.balances.append(balance)
        for event in batch.events:
            self.events.append(event)
            book = self._books.get(event.meter_id) if event.meter_id else None
            if book is not None:
                book.events.append(event)

    def _polled(self, raw: RawRegisters, dead: DeadLetter | None) -> None:
        book = self._books.get(raw.meter_id)
        if book is None:
            return
        if book.meter.endpoint is not None:
            self.poll_rates[book.meter.endpoint].add()
        book.latency.add(raw.latency_s)
        book.last_raw = tuple(RawBlock(b.function, b.address, b.words) for b in raw.blocks)
        book.last_raw_at = raw.received_at
        book.decode_failing = dead is not None
        if dead is not None:
            self._error(book, dead.reason, f"{dead.reason}: {dead.detail}", raw.received_at)
        else:
            book.failing_since = None

    def _poll_failed(self, failure: PollFailure, now: datetime) -> None:
        book = self._books.get(failure.meter_id)
        if book is None:
            return
        if book.meter.endpoint is not None:
            self.poll_rates[book.meter.endpoint].add()
            self.poll_errors[book.meter.endpoint][failure.error.kind] += 1
        # PollFailure.ts is the schedule slot; the failure happened just before the pipeline saw it.
        self._error(book, failure.error.kind, str(failure.error), now)

    def _message(self, raw: RawPayload, dead: DeadLetter | None) -> None:
        self.message_rate.add()
        if dead is not None:
            self.message_errors[dead.reason] += 1
        book = self._books.get(raw.meter_id) if raw.meter_id else None
        if book is None:
            return
        book.messages += 1
        book.last_message_at = raw.received_at
        book.last_message_ok = dead is None
        if dead is not None:
            book.bad_messages += 1
            self._error(book, dead.reason, dead.detail, raw.received_at)
        else:
            book.failing_since = None

    def _readout(self, raw: RawObjects, dead: DeadLetter | None) -> None:
        # A telegram of coded values the meter sent (or the driver read out): like a message, but
        # not one of the broker's (its counters are the MQTT link's).
        book = self._books.get(raw.meter_id)
        if book is None:
            return
        book.messages += 1
        book.last_message_at = raw.received_at
        book.last_message_ok = dead is None
        if dead is not None:
            book.bad_messages += 1
            self._error(book, dead.reason, dead.detail, raw.received_at)
        else:
            book.failing_since = None

    @staticmethod
    def _error(book: _Book, kind: str, message: str, at: datetime) -> None:
        book.last_error, book.last_error_kind, book.last_error_at = message, kind, at
        book.errors_by_kind[kind] += 1
        if book.failing_since is None:
            book.failing_since = at

    # -- snapshots -------------------------------------------------------------------------
    def state(self, meter_id: str, health: MeterHealth | None = None) -> MeterState:
        """The meter's state now; `health` is its driver's health (None for a meter that pushes)."""
        book = self._books[meter_id]
        if not book.meter.active:
            return MeterState.INACTIVE
        if book.meter.polled:
            if health is None or (health.polls == 0 and health.last_success is None):
                return MeterState.WAITING
            if health.comm_lost:
                return MeterState.LOST
            if health.consecutive_failures or book.decode_failing:
                return MeterState.FAILING
            return MeterState.OK if health.last_success is not None else MeterState.WAITING
        now = self._clock()
        silent = timedelta(seconds=self.silent_after)
        if book.last_message_at is None:
            return MeterState.SILENT if now - self.started_at > silent else MeterState.WAITING
        if now - book.last_message_at > silent:
            return MeterState.SILENT
        return MeterState.OK if book.last_message_ok else MeterState.FAILING

    def summary(self, meter_id: str, health: MeterHealth | None = None) -> MeterSummary:
        book = self._books[meter_id]
        m = book.meter
        last_seen = health.last_success if health is not None else book.last_message_at
        return MeterSummary(
            meter_id=meter_id, protocol=m.protocol, state=self.state(meter_id, health), where=m.where,
            endpoint=m.endpoint, last_seen=last_seen,
            consecutive_failures=health.consecutive_failures if health is not None else 0,
            last_error=book.last_error, last_error_kind=book.last_error_kind, last_error_at=book.last_error_at,
            failing_since=book.failing_since, balances=m.balances,
        )

    def fleet(self, health: Mapping[str, MeterHealth]) -> list[MeterSummary]:
        """Every configured meter, worst state first, then by meter id."""
        rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
        out = [self.summary(meter_id, health.get(meter_id)) for meter_id in self._books]
        out.sort(key=lambda s: (rank[s.state], s.meter_id))
        return out

    def diagnostics(
        self,
        meter_id: str,
        health: MeterHealth | None,
        *,
        payloads: Sequence[RecentPayload] = (),
        stored_events: Sequence[Event] = (),
        store_reachable: bool = True,
    ) -> MeterDiagnostics:
        """One meter in full. `stored_events` (newest first, from the store) are merged with the
        events seen since start, so open events survive a restart and show while the store is down."""
        book = self._books[meter_id]
        p50, p95 = book.latency.percentiles(50, 95)
        events = merge_events(stored_events, book.events)
        return MeterDiagnostics(
            summary=self.summary(meter_id, health),
            last_attempt=health.last_attempt if health is not None else book.last_message_at,
            last_success=health.last_success if health is not None else _last_ok_message(book),
            latency_p50_s=p50, latency_p95_s=p95,
            polls=health.polls if health is not None else 0,
            failures=health.failures if health is not None else book.bad_messages,
            messages=book.messages,
            errors_by_kind=dict(book.errors_by_kind),
            breaker=health.breaker if health is not None else None,
            last_raw=book.last_raw, last_raw_at=book.last_raw_at,
            recent_payloads=tuple(payloads),
            recent_readings=tuple(book.readings),
            open_events=tuple(open_events(events)),
            last_balance=book.last_balance,
            recent_balances=tuple(book.balances),
            store_reachable=store_reachable,
        )

    def readings_of(self, meter_id: str, channel: str | None = None) -> list[Reading]:
        """The readings kept in memory for a meter (one channel, or all), oldest first."""
        book = self._books.get(meter_id)
        if book is None:
            return []
        return [r for r in book.readings if channel is None or r.channel.value == channel]

    def balances_of(self, meter_id: str) -> list[BalanceUpdate]:
        book = self._books.get(meter_id)
        return list(book.balances) if book is not None else []

    def recent_events(self, meter_id: str | None = None, limit: int = 20) -> list[Event]:
        """Events seen since start, newest first."""
        source: Iterable[Event] = self.events if meter_id is None else (
            self._books[meter_id].events if meter_id in self._books else ())
        return list(reversed(list(source)))[:limit]

    def recent_deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                           limit: int = 100) -> list[DeadLetter]:
        """Dead letters seen since start, newest first, filtered."""
        out = [d for d in reversed(self.deadletters)
               if (meter_id is None or d.meter_id == meter_id) and (reason is None or d.reason == reason)]
        return out[:limit]

    def counts_by_state(self, health: Mapping[str, MeterHealth]) -> dict[MeterState, int]:
        counts = dict.fromkeys(MeterState, 0)
        for meter_id in self._books:
            counts[self.state(meter_id, health.get(meter_id))] += 1
        return counts


def _last_ok_message(book: _Book) -> datetime | None:
    if book.last_message_ok:
        return book.last_message_at
    return book.last_balance.received_at if book.last_balance is not None else None


def merge_events(*sources: Iterable[Event]) -> list[Event]:
    """Events from several sources (store, memory), each once, newest first."""
    seen: dict[tuple[datetime, str | None, str, str], Event] = {}
    for source in sources:
        for e in source:
            seen.setdefault((e.ts, e.meter_id, e.kind.value, e.detail), e)
    return sorted(seen.values(), key=lambda e: e.ts, reverse=True)


def merge_deadletters(*sources: Iterable[DeadLetter], limit: int) -> list[DeadLetter]:
    """Dead letters from several sources (store, memory), each once, newest first."""
    seen: dict[tuple[datetime, str, str, str], DeadLetter] = {}
    for source in sources:
        for d in source:
            seen.setdefault((d.ts, d.where, d.reason, d.payload), d)
    return sorted(seen.values(), key=lambda d: d.ts, reverse=True)[:limit]


def open_events(newest_first: Sequence[Event]) -> list[Event]:
    """The events whose condition still holds, newest first.

    An event of a kind in CLOSED_BY is open until a later event of a closing kind (same meter);
    of other kinds (anomaly, tamper, inspection_recommended, a failed or timed-out command, ...)
    open until acknowledged. A command the meter acknowledged (severity info) is a record, not
    something left to do.
    """
    closed_after: dict[tuple[str | None, EventKind], datetime] = {}
    out = []
    for e in sorted(newest_first, key=lambda e: e.ts):
        for opened, closers in CLOSED_BY.items():
            if e.kind in closers:
                closed_after[(e.meter_id, opened)] = e.ts
    for e in newest_first:
        if e.acknowledged or e.kind in CLOSING_KINDS or (e.kind is EventKind.COMMAND and e.severity is Severity.INFO):
            continue
        closed_at = closed_after.get((e.meter_id, e.kind))
        if closed_at is not None and closed_at >= e.ts:
            continue
        out.append(e)
    return out


__all__ = ["CLOSED_BY", "HealthBook", "RateWindow", "WatchedMeter", "merge_deadletters", "merge_events",
           "open_events"]
