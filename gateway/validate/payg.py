"""PAYG events derived from a meter's stream of balance updates (SPEC §3, issue 4).

The checker remembers each meter's last update and raises an Event on each *transition*:

    low_credit          balance fell to the meter's low-credit threshold (and is still above zero)
    credit_exhausted    balance reached zero or below
    emergency_credit    the meter started using emergency credit (severity critical: the relay
                        opens when it runs out)
    relay_disconnected / relay_connected
    topup               a newer last_topup was reported (its amount), or, for a meter that reports
                        no top-ups at all, the balance rose (the rise is the amount)
    anomaly             "suspicious balance": it rose with no top-up reported, or it fell faster
                        than the meter's plausible consumption (a configured cap per hour, or
                        `factor` x the median of the meter's own recent drain rates)

Drain is judged along the meter's periodic stream. A balance the meter sends *off its cycle* (as
part of its answer to a command, or to report a top-up at once) is not consumption: it is not
judged as drain, and the drain clock does not restart at it. The update after it is judged on
the fall from the off-cycle balance over the time since the last periodic update: a meter that
debits in steps (every quarter-hour, every kWh) would otherwise show a whole step's use in the
second between a top-up's reply and the next periodic report (issue 27: a false "suspicious
balance" at 33,330 KES/h). When an
off-cycle update is itself periodic (a top-up paid between two reports), the next rate is judged
over two intervals: less sensitive for one update, never a false alarm. An update is off-cycle when
it reports a new top-up (or, for a meter that reports none, a rise), or when it is the balance
update that came with a command's reply (`command_replied`): the first one received within
`reply_grace` after the reply, or the last one if it was received after the command was sent and
at most `reply_grace` before the reply was read.

The first update of a meter the checker has never seen raises the states that need action
(low credit, exhausted, emergency credit, relay open) once; transitions need a previous update.
An update that is not newer than the last one (a duplicate or an out-of-order message) raises
nothing and leaves the state alone: the store keeps it as history, events are never doubled.

Seed the checker at start (`seed`) from what is already accepted (store and spool), so a
restart or a re-delivered message does not raise the same event again.

Money is exact decimal text from the meter, any size: the checker's arithmetic runs in a decimal
context that never traps (a difference too large for it is an infinity, compared as one), so no
balance can make `check` raise. Each update is checked on its own: one whose rules fail anyway
leaves its meter's state as it was, and `check(..., on_error=...)` hands it back and goes on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, localcontext
from statistics import median

from gateway.model import BalanceUpdate, Event, EventKind, Relay, Severity

__all__ = ["SUSPICIOUS_KIND", "PaygChecker", "PaygLimits"]

#: The suspicious-balance event (an inspection or tamper check may follow).
SUSPICIOUS_KIND = EventKind.ANOMALY
#: Balance arithmetic: the default 28 digits, the widest exponents, and no traps, so that
#: 1e1000000 - 5 is a number and 9e999999999999999999 - -9e999999999999999999 an infinity
#: (the default context raises decimal.Overflow on both).
_ARITHMETIC = Context(prec=28, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])


@dataclass(frozen=True, slots=True)
class PaygLimits:
    """One meter's thresholds for the derived events."""

    low_credit_threshold: Decimal = Decimal("5")
    #: A fall faster than this (currency units per hour) is suspicious; None = learn from the meter.
    max_drain_per_hour: Decimal | None = None
    #: Learned limit: a fall faster than factor x median of the recent drain rates is suspicious...
    factor: float = 5.0
    #: ...once this many rates are known (fewer: no learned verdict yet).
    min_samples: int = 5
    window: int = 48
    #: Smaller moves are never suspicious (rounding, a standing charge between two close updates).
    min_change: Decimal = Decimal("1")

    def __post_init__(self) -> None:
        if self.factor <= 1 or self.min_samples < 1 or self.window < self.min_samples or self.min_change < 0:
            msg = (
                f"PAYG limits need factor > 1, 1 <= min_samples <= window, min_change >= 0; got factor={self.factor}, "
                f"min_samples={self.min_samples}, window={self.window}, min_change={self.min_change}"
            )
            raise ValueError(msg)


@dataclass(slots=True)
class _State:
    last: BalanceUpdate
    #: The meter has reported a last top-up at least once: a rise without a newer one is odd.
    reports_topups: bool
    rates: deque[float] = field(default_factory=deque)
    #: The drain clock: the next fall is judged over the time since this (the last periodic update).
    since: datetime = field(init=False)
    #: `since` as it was before `last` came (if `last` turns out to be a command's reply).
    since_before_last: datetime = field(init=False)
    #: `last` was off-cycle (a top-up or a command's reply).
    last_off_cycle: bool = False
    #: A command was answered: the first update received until then is its reply (gateway clock).
    reply_until: datetime | None = None

    def __post_init__(self) -> None:
        self.since = self.since_before_last = self.last.ts


def _money(value: Decimal, currency: str) -> str:
    return f"{value} {currency}".strip()


class PaygChecker:
    """Stateful per meter; `check` is pure apart from that state (no clock, no I/O)."""

    def __init__(self, limits: Mapping[str, PaygLimits] | None = None, default: PaygLimits | None = None, *,
                 reply_grace: timedelta = timedelta(seconds=2)) -> None:
        self._limits = dict(limits or {})
        self._default = default or PaygLimits()
        self._state: dict[str, _State] = {}
        #: How long after a command's reply the meter's balance update counts as part of that reply.
        self.reply_grace = reply_grace

    def limits(self, meter_id: str) -> PaygLimits:
        return self._limits.get(meter_id, self._default)

    def last(self, meter_id: str) -> BalanceUpdate | None:
        state = self._state.get(meter_id)
        return state.last if state else None

    def seed(self, updates: Iterable[BalanceUpdate | None]) -> int:
        """Remember already-accepted updates without raising events; keeps the newest per meter.

        Order does not matter, so it can be fed from the spool and later from the store.
        Returns how many updates moved a meter's state forward.
        """
        moved = 0
        for update in updates:
            if update is None:
                continue
            state = self._state.get(update.meter_id)
            if state is None:
                self._state[update.meter_id] = _State(update, update.last_topup_ts is not None)
                moved += 1
            elif update.ts > state.last.ts:
                state.last = update
                state.since = state.since_before_last = update.ts
                state.reports_topups = state.reports_topups or update.last_topup_ts is not None
                moved += 1
        return moved

    def command_replied(self, meter_id: str, sent: datetime | None, replied: datetime) -> None:
        """A command to the meter, sent at `sent` (None: not known, e.g. another gateway's), was
        answered at `replied` (the gateway's clock, as the updates' received_at): the balance update
        the meter sends with its answer is off-cycle."""
        state = self._state.get(meter_id)
        if state is None:
            return
        last = state.last.received_at
        earliest = replied - self.reply_grace if sent is None else max(sent, replied - self.reply_grace)
        if last is not None and last >= earliest:
            # The meter's balance came in before its reply was read: re-time the drain after it.
            if not state.last_off_cycle:
                state.since, state.last_off_cycle = state.since_before_last, True
            return
        state.reply_until = replied + self.reply_grace

    def check(self, updates: Sequence[BalanceUpdate],
              on_error: Callable[[BalanceUpdate, Exception], None] | None = None) -> list[Event]:
        """The events these updates raise, in time order per meter; updates the state.

        An update whose rules raise leaves its meter's state as it was; with `on_error` it is
        handed there and the others are checked, without it the exception propagates."""
        events: list[Event] = []
        with localcontext(_ARITHMETIC):
            for update in sorted(updates, key=lambda u: (u.meter_id, u.ts)):
                try:
                    events.extend(self._check_one(update))
                except Exception as exc:
                    if on_error is None:
                        raise
                    on_error(update, exc)
        return events

    def _check_one(self, update: BalanceUpdate) -> list[Event]:
        state = self._state.get(update.meter_id)
        if state is None:
            out = self._first(update)
            # Only once its events are made: an update that fails here leaves no state behind.
            self._state[update.meter_id] = _State(update, update.last_topup_ts is not None)
            return out
        if update.ts > state.last.ts:
            return self._transition(state, update)
        return []

    # -- rules -----------------------------------------------------------------------------------

    def _first(self, u: BalanceUpdate) -> list[Event]:
        out: list[Event] = []
        if u.credit_exhausted:
            out.append(self._exhausted(u))
        elif u.low_credit:
            out.append(self._low(u))
        if u.emergency_credit_in_use:
            out.append(self._emergency(u))
        if u.relay is Relay.DISCONNECTED:
            out.append(self._relay(u))
        return out

    def _transition(self, state: _State, u: BalanceUpdate) -> list[Event]:
        prev = state.last
        limits = self.limits(u.meter_id)
        out: list[Event] = []
        new_topup = u.last_topup_ts is not None and (prev.last_topup_ts is None or u.last_topup_ts > prev.last_topup_ts)
        reports_topups = state.reports_topups or u.last_topup_ts is not None
        change = u.balance - prev.balance
        reply = state.reply_until is not None and u.received_at is not None and u.received_at <= state.reply_until
        off_cycle = reply or new_topup or (change > 0 and not reports_topups)
        learnt: float | None = None  # a drain rate to remember, once everything else is made
        if new_topup:
            amount = u.last_topup_amount
            text = f"top-up of {_money(amount, u.currency)}" if amount is not None else "top-up (amount not reported)"
            out.append(self._event(u, EventKind.TOPUP, Severity.INFO,
                                   f"{text}; balance {_money(u.balance, u.currency)}"))
        elif change > 0 and not reports_topups:
            out.append(self._event(u, EventKind.TOPUP, Severity.INFO,
                                   f"top-up of {_money(change, u.currency)} inferred from the balance rise "
                                   f"(the meter reports no top-ups); balance {_money(u.balance, u.currency)}"))
        elif change >= limits.min_change:
            out.append(self._event(u, SUSPICIOUS_KIND, Severity.WARNING,
                                   f"suspicious balance: rose by {_money(change, u.currency)} "
                                   f"(from {prev.balance} to {u.balance}) with no top-up reported"))
        elif change < 0 and not reply:
            drained, learnt = self._drain(state, prev, u, limits)
            out.extend(drained)

        if u.credit_exhausted and not prev.credit_exhausted:
            out.append(self._exhausted(u))
        elif u.low_credit and not u.credit_exhausted and not prev.low_credit:
            out.append(self._low(u))
        if u.emergency_credit_in_use and not prev.emergency_credit_in_use:
            out.append(self._emergency(u))
        if u.relay is not None and prev.relay is not None and u.relay is not prev.relay:
            out.append(self._relay(u))
        elif u.relay is Relay.DISCONNECTED and prev.relay is None:
            out.append(self._relay(u))
        # The state moves only here, after every event is made: an update that raised above
        # changed nothing.
        if learnt is not None:
            state.rates.append(learnt)
            while len(state.rates) > limits.window:
                state.rates.popleft()
        state.reply_until = None  # the first update after a reply is its balance, or the meter sent none
        state.last = u
        state.reports_topups = reports_topups
        state.since_before_last = state.since
        if not off_cycle:
            state.since = u.ts
        state.last_off_cycle = off_cycle
        return out

    def _drain(self, state: _State, prev: BalanceUpdate, u: BalanceUpdate,
               limits: PaygLimits) -> tuple[list[Event], float | None]:
        """Is this fall plausible for this meter? Its event if not, else the drain rate to learn.

        The time is the drain clock's (`state.since`): since the last periodic update, so a
        balance sent off-cycle just before `u` does not shrink it."""
        hours = (u.ts - state.since).total_seconds() / 3600
        drop = prev.balance - u.balance
        if hours <= 0:
            return [], None
        rate = float(drop) / hours
        verdict: str | None = None
        if drop >= limits.min_change:
            if limits.max_drain_per_hour is not None:
                if rate > float(limits.max_drain_per_hour):
                    verdict = f"more than the configured {limits.max_drain_per_hour}/h"
            elif len(state.rates) >= limits.min_samples:
                usual = median(state.rates)
                if rate > limits.factor * usual:
                    verdict = f"more than {limits.factor:g} x its usual {usual:.4g}/h"
        if verdict is not None:
            # A suspicious fall is not learned: it must not teach the meter that it is normal.
            return [self._event(u, SUSPICIOUS_KIND, Severity.WARNING,
                                f"suspicious balance: fell by {_money(drop, u.currency)} in {hours * 60:.3g} min "
                                f"({rate:.4g}/h), {verdict}")], None
        if prev.relay is not Relay.DISCONNECTED and prev.balance > 0:
            return [], rate
        return [], None

    # -- events ----------------------------------------------------------------------------------

    @staticmethod
    def _event(u: BalanceUpdate, kind: EventKind, severity: Severity, detail: str) -> Event:
        return Event(ts=u.ts, meter_id=u.meter_id, kind=kind, severity=severity, detail=detail)

    def _low(self, u: BalanceUpdate) -> Event:
        threshold = self.limits(u.meter_id).low_credit_threshold
        return self._event(u, EventKind.LOW_CREDIT, Severity.WARNING,
                           f"low credit: balance {_money(u.balance, u.currency)} is at or below the threshold "
                           f"{threshold}")

    def _exhausted(self, u: BalanceUpdate) -> Event:
        return self._event(u, EventKind.CREDIT_EXHAUSTED, Severity.CRITICAL,
                           f"credit exhausted: balance {_money(u.balance, u.currency)}")

    def _emergency(self, u: BalanceUpdate) -> Event:
        left = "" if u.emergency_credit is None else f", {_money(u.emergency_credit, u.currency)} of it left"
        return self._event(u, EventKind.EMERGENCY_CREDIT, Severity.CRITICAL,
                           f"emergency credit in use{left}; balance {_money(u.balance, u.currency)}")

    def _relay(self, u: BalanceUpdate) -> Event:
        if u.relay is Relay.DISCONNECTED:
            return self._event(u, EventKind.RELAY_DISCONNECTED, Severity.CRITICAL,
                               f"relay disconnected; balance {_money(u.balance, u.currency)}")
        return self._event(u, EventKind.RELAY_CONNECTED, Severity.INFO,
                           f"relay connected; balance {_money(u.balance, u.currency)}")
