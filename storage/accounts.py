"""Rules of the account side both stores share: assignment checks and PAYG totals.

Pure: the stores read what is stored, call these, and write what they decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from gateway.errors import InvalidRequest
from gateway.model import BalanceUpdate, Relay
from storage.records import Conflict, PaygTotals


@dataclass(frozen=True, slots=True)
class OpenAssignment:
    """The stored open assignment of a meter, as a store reads it."""

    consumer_number: str
    start: datetime


def check_assignment(meter_id: str, consumer_number: str, start: datetime, at: datetime, *,
                     open_: OpenAssignment | None, last_end: datetime | None,
                     deactivated_at: datetime | None, installed_at: datetime | None = None) -> None:
    """Raise what makes this move-in impossible, with what is wrong in the message."""
    if not consumer_number.strip():
        msg = f"meter {meter_id}: the consumer number is empty"
        raise InvalidRequest(msg)
    if start > at:
        msg = (f"meter {meter_id}: assignment start {start.isoformat()} is in the future (now {at.isoformat()}); "
               "assign once the move-in has happened, so its opening read exists")
        raise InvalidRequest(msg)
    if deactivated_at is not None:
        msg = f"consumer {consumer_number} was deactivated at {deactivated_at.isoformat()}: it takes no new meters"
        raise Conflict(msg)
    if open_ is not None and open_.consumer_number == consumer_number:
        msg = f"meter {meter_id} is already assigned to consumer {consumer_number} since {open_.start.isoformat()}"
        raise Conflict(msg)
    if open_ is not None and start <= open_.start:
        msg = (f"meter {meter_id}: assignment start {start.isoformat()} must be after the start of its current "
               f"assignment to {open_.consumer_number} ({open_.start.isoformat()})")
        raise Conflict(msg)
    if last_end is not None and start < last_end:
        msg = (f"meter {meter_id}: assignment start {start.isoformat()} is before the end of its last assignment "
               f"({last_end.isoformat()}); history is not rewritten")
        raise Conflict(msg)
    if installed_at is not None and start < installed_at:
        msg = (f"meter {meter_id}: assignment start {start.isoformat()} is before the meter's installed_at "
               f"({installed_at.isoformat()}); a meter is assigned from its installation on (correct installed_at "
               "first if it is wrong)")
        raise Conflict(msg)


def check_installed_at(meter_id: str, installed_at: datetime, *, orphaned: int, first: datetime | None,
                       assigned: OpenAssignment | None) -> None:
    """Conflict when moving a meter's installed_at to `installed_at` would leave `orphaned`
    readings (the first at `first`) or an assignment (`assigned`, the earliest) before it."""
    if orphaned:
        assert first is not None
        msg = (f"meter {meter_id}: installed_at {installed_at.isoformat()} would orphan {orphaned} reading(s) "
               f"stored before it (the first at {first.isoformat()}); installed_at must be at or before the "
               "meter's first reading")
        raise Conflict(msg)
    if assigned is not None:
        msg = (f"meter {meter_id}: installed_at {installed_at.isoformat()} is after the start of its assignment to "
               f"{assigned.consumer_number} ({assigned.start.isoformat()}); no assignment starts before installation")
        raise Conflict(msg)


def first_start(meter_id: str, installed_at: datetime | None, at: datetime) -> datetime:
    """When a new meter's first assignment starts: at its installation, or `at` without one.
    Conflict for an installation after `at` (it would start before the installation)."""
    if installed_at is None:
        return at
    if installed_at > at:
        msg = (f"meter {meter_id}: installed_at {installed_at.isoformat()} is in the future (now {at.isoformat()}): "
               "its consumer can be assigned once it is installed")
        raise Conflict(msg)
    return installed_at


def payg_totals(latest: Iterable[BalanceUpdate]) -> list[PaygTotals]:
    """Totals per currency of the latest balance update of each PAYG meter."""
    by_currency: dict[str, list[BalanceUpdate]] = {}
    for b in latest:
        by_currency.setdefault(b.currency, []).append(b)
    return [
        PaygTotals(
            currency=currency,
            meters=len(group),
            total_balance=sum((b.balance for b in group), Decimal(0)),
            low_credit=sum(1 for b in group if b.low_credit),
            emergency_credit=sum(1 for b in group if b.emergency_credit_in_use),
            credit_exhausted=sum(1 for b in group if b.credit_exhausted),
            disconnected=sum(1 for b in group if b.relay is Relay.DISCONNECTED),
            total_debt=sum((b.debt for b in group if b.debt is not None), Decimal(0)),
        )
        for currency, group in sorted(by_currency.items())
    ]
