"""PaygChecker: PAYG events from a meter's balance updates (pure, no servers)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gateway.model import BalanceUpdate, Event, EventKind, Relay, Severity
from gateway.validate.payg import PaygChecker, PaygLimits

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def bal(balance: str, minute: float = 0, meter: str = "P-1", threshold: str = "5", **kw: object) -> BalanceUpdate:
    value = Decimal(balance)
    fields: dict[str, object] = {"relay": Relay.CONNECTED, **kw}
    return BalanceUpdate(meter_id=meter, ts=T0 + timedelta(minutes=minute), balance=value, currency="KES",
                         low_credit=value <= Decimal(threshold), credit_exhausted=value <= 0,
                         **fields)  # type: ignore[arg-type]


def kinds(events: list[Event]) -> list[str]:
    return [e.kind.value for e in events]


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (bal("50"), []),
        (bal("4"), ["low_credit"]),
        (bal("0"), ["credit_exhausted"]),  # exhausted implies low: one event, not two
        (bal("0", emergency_credit_in_use=True, emergency_credit=Decimal(30)),
         ["credit_exhausted", "emergency_credit"]),
        (bal("0", relay=Relay.DISCONNECTED), ["credit_exhausted", "relay_disconnected"]),
        (bal("20", relay=Relay.DISCONNECTED), ["relay_disconnected"]),  # e.g. after a disconnect command
        (bal("20", last_topup_amount=Decimal(100), last_topup_ts=T0), []),  # an old top-up is not news
    ],
)
def test_first_update_raises_the_states_that_need_action(update: BalanceUpdate, expected: list[str]) -> None:
    assert kinds(PaygChecker().check([update])) == expected


def test_transitions_each_raise_once() -> None:
    c = PaygChecker()
    steps = [
        (bal("12", 0), []),
        (bal("6", 15), []),
        (bal("5", 30), ["low_credit"]),
        (bal("3", 45), []),  # still low: no repeat
        (bal("0", 60, emergency_credit_in_use=True, emergency_credit=Decimal(50)),
         ["credit_exhausted", "emergency_credit"]),
        (bal("0", 75, emergency_credit_in_use=True, emergency_credit=Decimal(20)), []),
        (bal("0", 90, emergency_credit_in_use=True, emergency_credit=Decimal(0), relay=Relay.DISCONNECTED),
         ["relay_disconnected"]),
        (bal("95", 105, last_topup_amount=Decimal(200), last_topup_ts=T0 + timedelta(minutes=100)),
         ["topup", "relay_connected"]),
        (bal("94", 120, last_topup_amount=Decimal(200), last_topup_ts=T0 + timedelta(minutes=100)), []),
        # 91 KES over a day: a plausible drain (the same fall in 15 minutes would be suspicious).
        (bal("3", 120 + 24 * 60, last_topup_amount=Decimal(200), last_topup_ts=T0 + timedelta(minutes=100)),
         ["low_credit"]),
    ]
    for update, expected in steps:
        assert kinds(c.check([update])) == expected, update


def test_event_details_and_severities() -> None:
    c = PaygChecker({"P-1": PaygLimits(low_credit_threshold=Decimal("7.50"))})
    c.check([bal("20", 0, threshold="7.50")])
    (low,) = c.check([bal("7.25", 15, threshold="7.50")])
    assert (low.kind, low.severity, low.meter_id, low.ts) == (EventKind.LOW_CREDIT, Severity.WARNING, "P-1",
                                                              T0 + timedelta(minutes=15))
    assert low.detail == "low credit: balance 7.25 KES is at or below the threshold 7.50"
    exhausted, emergency = c.check([bal("0", 30, emergency_credit_in_use=True, emergency_credit=Decimal("40.00"))])
    assert (exhausted.severity, exhausted.detail) == (Severity.CRITICAL, "credit exhausted: balance 0 KES")
    assert emergency.kind is EventKind.EMERGENCY_CREDIT and emergency.severity is Severity.CRITICAL
    assert emergency.detail == "emergency credit in use, 40.00 KES of it left; balance 0 KES"
    (topup,) = c.check([bal("80", 45, last_topup_amount=Decimal("100.00"), last_topup_ts=T0)])
    assert topup.detail == "top-up of 100.00 KES; balance 80 KES"


def test_emergency_credit_is_raised_when_it_starts_and_not_again_while_in_use() -> None:
    c = PaygChecker()
    steps = [
        (bal("8", 0), []),
        # Emergency credit while the balance is still above the low-credit threshold: its own event.
        (bal("7", 15, emergency_credit_in_use=True, emergency_credit=Decimal(30)), ["emergency_credit"]),
        (bal("6", 30, emergency_credit_in_use=True, emergency_credit=Decimal(20)), []),  # still in use
        (bal("6", 30, emergency_credit_in_use=True, emergency_credit=Decimal(20)), []),  # re-delivered
        (bal("4", 45, emergency_credit_in_use=True, emergency_credit=Decimal(10)), ["low_credit"]),
        (bal("4", 60, emergency_credit_in_use=False, emergency_credit=Decimal(50)), []),  # repaid: no event
        (bal("3", 75, emergency_credit_in_use=True, emergency_credit=Decimal(45)), ["emergency_credit"]),  # again
    ]
    for update, expected in steps:
        assert kinds(c.check([update])) == expected, update


def test_emergency_credit_already_in_use_before_a_restart_is_not_raised_again() -> None:
    c = PaygChecker()
    c.seed([bal("2", 0, emergency_credit_in_use=True, emergency_credit=Decimal(30))])
    assert c.check([bal("1", 15, emergency_credit_in_use=True, emergency_credit=Decimal(25))]) == []


def test_topup_inferred_when_the_meter_reports_none() -> None:
    c = PaygChecker()
    c.check([bal("10", 0)])
    (event,) = c.check([bal("60.50", 15)])
    assert event.kind is EventKind.TOPUP
    assert event.detail.startswith("top-up of 50.50 KES inferred from the balance rise")


def test_rise_without_a_topup_is_suspicious_when_the_meter_reports_topups() -> None:
    c = PaygChecker()
    c.check([bal("10", 0, last_topup_amount=Decimal(100), last_topup_ts=T0)])
    (event,) = c.check([bal("60", 15, last_topup_amount=Decimal(100), last_topup_ts=T0)])
    assert (event.kind, event.severity) == (EventKind.ANOMALY, Severity.WARNING)
    assert event.detail == "suspicious balance: rose by 50 KES (from 10 to 60) with no top-up reported"
    # A rise below min_change (rounding) is not.
    assert c.check([bal("60.50", 30, last_topup_amount=Decimal(100), last_topup_ts=T0)]) == []


def test_fall_faster_than_the_meters_usual_drain_is_suspicious() -> None:
    c = PaygChecker()
    balance = Decimal(500)
    for i in range(8):  # ~4 KES per hour, varying
        balance -= Decimal(1) + Decimal(i % 3) / 10
        assert c.check([bal(str(balance), 15 * (i + 1))]) == []
    (event,) = c.check([bal(str(balance - 20), 15 * 9)])  # 80 KES per hour
    assert event.kind is EventKind.ANOMALY
    assert event.detail == "suspicious balance: fell by 20.0 KES in 15 min (80/h), more than 5 x its usual 4.4/h"
    # The suspicious rate was not learned: the same jump is still suspicious.
    assert kinds(c.check([bal(str(balance - 40), 15 * 10)])) == ["anomaly"]
    assert c.check([bal(str(balance - Decimal("41.1")), 15 * 11)]) == []


def test_no_learned_verdict_before_enough_samples() -> None:
    c = PaygChecker(default=PaygLimits(min_samples=5))
    c.check([bal("500", 0)])
    c.check([bal("499", 15)])
    assert c.check([bal("400", 30)]) == []  # one sample only: no verdict yet


def test_configured_drain_cap() -> None:
    c = PaygChecker({"P-1": PaygLimits(max_drain_per_hour=Decimal(5))})
    c.check([bal("100", 0)])
    assert c.check([bal("96", 60)]) == []  # 4 per hour
    assert c.check([bal("95.5", 61)]) == []  # 30 per hour but only 0.5: below min_change
    (event,) = c.check([bal("85", 121)])  # 10.5 in an hour
    assert event.detail.endswith("more than the configured 5/h")


def test_duplicates_and_out_of_order_raise_nothing_and_keep_the_newest_state() -> None:
    c = PaygChecker()
    c.check([bal("20", 0)])
    assert kinds(c.check([bal("4", 30)])) == ["low_credit"]
    assert c.check([bal("4", 30)]) == []  # re-delivered
    assert c.check([bal("20", 15)]) == []  # late: older than what we know
    latest = c.last("P-1")
    assert latest is not None and latest.ts == T0 + timedelta(minutes=30)
    assert c.check([bal("3", 45)]) == []  # still low compared with the newest


def test_a_batch_is_taken_in_time_order_per_meter() -> None:
    c = PaygChecker()
    events = c.check([bal("4", 30), bal("20", 0), bal("30", 0, meter="P-2"), bal("0", 60, meter="P-2")])
    assert [(e.meter_id, e.kind.value) for e in events] == [("P-1", "low_credit"), ("P-2", "credit_exhausted")]


def test_seed_suppresses_repeats_after_a_restart() -> None:
    c = PaygChecker()
    assert c.seed([bal("4", 30), None, bal("20", 0), bal("3", 10, meter="P-2")]) == 2
    assert c.check([bal("3.50", 45)]) == []  # was already low before the restart
    assert c.check([bal("4", 30)]) == []  # a re-delivery of what is spooled
    assert c.seed([bal("50", 20)]) == 0  # older than what the checker holds: ignored


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="factor > 1"):
        PaygLimits(factor=1)
    with pytest.raises(ValueError, match="min_samples"):
        PaygLimits(min_samples=10, window=5)


def test_threshold_comes_from_the_meters_limits() -> None:
    c = PaygChecker({"P-1": PaygLimits(low_credit_threshold=Decimal(100))})
    (event,) = c.check([replace(bal("99", 0, threshold="100"))])
    assert event.detail.endswith("threshold 100")
    assert c.limits("P-9").low_credit_threshold == Decimal(5)


# -- off-cycle updates: a command's reply, a top-up (issue 27, item 12) --------------------------------------------


def periodic(c: PaygChecker, start: int = 500, minutes: range = range(0, 9 * 15, 15)) -> Decimal:
    """A meter that debits 2 KES at each quarter-hourly report; returns its last balance."""
    balance = Decimal(start)
    for i, minute in enumerate(minutes):
        balance = Decimal(start) - 2 * i
        assert c.check([bal(str(balance), minute, received_at=T0 + timedelta(minutes=minute))]) == []
    return balance


def test_a_topup_sent_just_before_a_periodic_report_is_not_read_as_consumption() -> None:
    c = PaygChecker()
    b = periodic(c)  # reports at 0, 15, ..., 120 min; 8 KES/h
    topup: dict[str, Any] = {"last_topup_amount": Decimal("100.50"), "last_topup_ts": T0 + timedelta(minutes=134.9)}
    # The meter's reply to the top-up, 6 s before its next periodic report...
    assert kinds(c.check([bal(str(b + Decimal("100.50")), 134.9, **topup)])) == ["topup"]
    # ...which carries the quarter-hour's 2 KES: 8/h over the stream, not 1,200/h over 6 s.
    assert c.check([bal(str(b + Decimal("98.50")), 135, **topup)]) == []
    # The stream goes on as before, and a real drain is still one.
    assert c.check([bal(str(b + Decimal("96.50")), 150, **topup)]) == []
    (event,) = c.check([bal(str(b + Decimal("56.50")), 165, **topup)])
    assert event.detail == "suspicious balance: fell by 40.00 KES in 15 min (160/h), more than 5 x its usual 8/h"


def test_a_drain_right_after_a_topup_is_still_judged() -> None:
    c = PaygChecker()
    b = periodic(c)
    topup: dict[str, Any] = {"last_topup_amount": Decimal(100), "last_topup_ts": T0 + timedelta(minutes=134.9)}
    c.check([bal(str(b + 100), 134.9, **topup)])
    # 60 KES gone by the next periodic report: judged over the quarter-hour since the last one.
    (event,) = c.check([bal(str(b + 40), 135, **topup)])
    assert event.detail == "suspicious balance: fell by 60 KES in 15 min (240/h), more than 5 x its usual 8/h"


def test_a_topup_reported_at_a_periodic_report_judges_the_next_over_two_intervals() -> None:
    # The checker cannot tell a top-up paid between two reports from one the meter reports with its own,
    # so the drain after either is taken from the report before the top-up: here 30 min, not 15 (less
    # sensitive for that one update, never a false alarm), and a real drain is still caught.
    c = PaygChecker()
    b = periodic(c)
    topup: dict[str, Any] = {"last_topup_amount": Decimal(100), "last_topup_ts": T0 + timedelta(minutes=130)}
    c.check([bal(str(b + 98), 135, **topup)])
    (event,) = c.check([bal(str(b + 38), 150, **topup)])
    assert event.detail == "suspicious balance: fell by 60 KES in 30 min (120/h), more than 5 x its usual 8/h"
    (event,) = c.check([bal(str(b - 22), 165, **topup)])  # a suspicious fall is not learned; 15 min again
    assert event.detail.endswith("in 15 min (240/h), more than 5 x its usual 8/h")


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


@pytest.mark.parametrize(("reply_first", "sent"), [(True, 134.85), (False, 134.85), (True, None), (False, None)],
                         ids=["reply-read-first", "balance-came-first", "another-gateways-reply-first",
                              "another-gateways-balance-first"])
def test_the_balance_a_meter_sends_with_a_command_reply_is_off_cycle(reply_first: bool, sent: float | None) -> None:
    c = PaygChecker()
    b = periodic(c)
    # A reconnect the meter answers although it was connected: its reply's balance changes nothing. With
    # shared subscriptions the reply to another gateway's command (sent: not known here) counts as well.
    same = bal(str(b), 134.9, received_at=at(134.9))
    sent_at = None if sent is None else at(sent)
    if reply_first:
        c.command_replied("P-1", sent_at, at(134.9))
        assert c.check([same]) == []
    else:  # the balance update overtook the reply (another topic): the reply still re-times the drain
        assert c.check([same]) == []
        c.command_replied("P-1", sent_at, at(134.91))
    assert c.check([bal(str(b - 2), 135, received_at=at(135))]) == []
    (event,) = c.check([bal(str(b - 42), 150, received_at=at(150))])
    assert event.detail.endswith("in 15 min (160/h), more than 5 x its usual 8/h")


def test_only_the_update_that_comes_with_a_reply_is_part_of_it() -> None:
    c = PaygChecker(reply_grace=timedelta(seconds=2))
    b = periodic(c)
    c.command_replied("P-1", at(134), at(134.01))
    # The meter sent no balance with its reply; the next periodic report comes after the grace: judged.
    (event,) = c.check([bal(str(b - 40), 135, received_at=at(135))])
    assert event.kind is EventKind.ANOMALY
    c.command_replied("P-1", at(149), at(149.99))
    # Within the grace: taken as the reply's balance (not judged); the one after it is, over the stream.
    assert c.check([bal(str(b - 42), 150, received_at=at(150))]) == []
    (event,) = c.check([bal(str(b - 82), 165, received_at=at(165))])
    assert event.detail.endswith("in 30 min (80/h), more than 5 x its usual 8/h")
    c.command_replied("P-9", at(1), at(2))  # a meter the checker has not seen yet: nothing to do


def test_a_reply_long_before_does_not_excuse_a_short_gap() -> None:
    # Not every short gap is forgiven: an unchanged balance 6 s before a periodic report that is no
    # command's reply (a command was answered 35 min earlier) is read as periodic, and the 2 KES of the
    # next report in 6 s stay suspicious.
    c = PaygChecker(reply_grace=timedelta(seconds=2))
    b = periodic(c)
    c.command_replied("P-1", at(99), at(100))
    c.check([bal(str(b), 134.9, received_at=at(134.9))])
    (event,) = c.check([bal(str(b - 2), 135, received_at=at(135))])
    assert event.detail == "suspicious balance: fell by 2 KES in 0.1 min (1200/h), more than 5 x its usual 8/h"
