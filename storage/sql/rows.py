"""Rows of either store <-> the model: the column lists, and converters that take the
database's encodings from its Dialect (times, money, JSON)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.model import BalanceUpdate, Command, DeadLetter, Event, Meter, Reading
from storage.identity import deadletter_key, event_key
from storage.rows import (
    CHANNEL,
    COMMAND_KIND,
    COMMAND_STATUS,
    EVENT_KIND,
    KIND,
    METER_STATUS,
    PROTOCOL,
    RELAY,
    SEVERITY,
    SOURCE,
    STATUS,
    UTILITY,
    quality,
)
from storage.sql.dialect import Dialect

#: What a write sends: the store adds seq and its own gateway_id.
READING_IN = "meter_id, channel, ts, value, kind, quality, status, source, received_at, note"
READING_COLS = f"seq, {READING_IN}, gateway_id"
BALANCE_COLS = (
    "seq, meter_id, ts, balance, currency, emergency_credit, emergency_credit_in_use, debt, relay,"
    " last_topup_amount, last_topup_ts, low_credit, credit_exhausted, received_at"
)
BALANCE_IN = BALANCE_COLS.removeprefix("seq, ")
METER_COLS = (
    "meter_id, utility, protocol, address, model, device_number, payg, status, installed_at,"
    " consumer_number, location, tags"
)
EVENT_COLS = "ts, meter_id, kind, severity, detail, acknowledged"
DEADLETTER_COLS = "ts, source, origin, reason, detail, payload, meter_id"
COMMAND_COLS = ("correlation_id, meter_id, kind, created_at, status, amount, reference, updated_at, detail,"
                " idempotency_key, unsent")


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


class Rows:
    """The converters of one dialect. sqlite3 stores a bool as 0/1 by itself, and `bool()`
    reads either back, so booleans need no hook."""

    __slots__ = ("_dt", "_money", "_opt_dt", "_opt_ts", "_ts", "d", "reading")

    def __init__(self, d: Dialect, *, reading: Callable[[Any], Reading] | None = None) -> None:
        """`reading`: an engine's own converter of reading rows, the hottest one (pages of
        10,000), where the bench shows the hooks' calls."""
        self.d = d
        # Bound once: a page of readings converts two times a row.
        self._ts, self._opt_ts, self._dt, self._opt_dt, self._money = d.ts, d.opt_ts, d.dt, d.opt_dt, d.money
        self.reading: Callable[[Any], Reading] = reading or self._reading

    def reading_row(self, r: Reading) -> tuple[Any, ...]:
        return (
            r.meter_id, r.channel.value, self._ts(r.ts), r.value, r.kind.value, int(r.quality),
            r.status.value, r.source.value, self._opt_ts(r.received_at), r.note,
        )  # fmt: skip

    def _reading(self, row: Any) -> Reading:
        return Reading(
            row[1], CHANNEL[row[2]], self._dt(row[3]), row[4], KIND[row[5]], quality(row[6]), STATUS[row[7]],
            SOURCE[row[8]], self._opt_dt(row[9]), row[0], row[10], row[11],
        )  # fmt: skip

    def balance_row(self, b: BalanceUpdate) -> tuple[Any, ...]:
        money = self._money
        return (
            b.meter_id, self._ts(b.ts), money(b.balance), b.currency, money(b.emergency_credit),
            b.emergency_credit_in_use, money(b.debt), None if b.relay is None else b.relay.value,
            money(b.last_topup_amount), self._opt_ts(b.last_topup_ts), b.low_credit, b.credit_exhausted,
            self._opt_ts(b.received_at),
        )  # fmt: skip

    def balance(self, row: Any) -> BalanceUpdate:
        return BalanceUpdate(
            seq=row[0], meter_id=row[1], ts=self._dt(row[2]), balance=Decimal(row[3]), currency=row[4],
            emergency_credit=_dec(row[5]), emergency_credit_in_use=bool(row[6]), debt=_dec(row[7]),
            relay=None if row[8] is None else RELAY[row[8]], last_topup_amount=_dec(row[9]),
            last_topup_ts=self._opt_dt(row[10]), low_credit=bool(row[11]), credit_exhausted=bool(row[12]),
            received_at=self._opt_dt(row[13]),
        )  # fmt: skip

    def meter_row(self, m: Meter, now: Any) -> tuple[Any, ...]:
        """`now`: created_at and updated_at, already encoded (`d.ts`)."""
        return (
            m.meter_id, m.utility.value, m.protocol.value, m.address, m.model, m.device_number, m.payg,
            m.status.value, self._opt_ts(m.installed_at), m.consumer_number, m.location, self.d.json(m.tags),
            now, now,
        )  # fmt: skip

    def meter(self, row: Any) -> Meter:
        return Meter(
            meter_id=row[0], utility=UTILITY[row[1]], protocol=PROTOCOL[row[2]], address=row[3], model=row[4],
            device_number=row[5], payg=bool(row[6]), status=METER_STATUS[row[7]], installed_at=self._opt_dt(row[8]),
            consumer_number=row[9], location=row[10], tags=self.d.json_of(row[11]),
        )  # fmt: skip

    def event_row(self, e: Event) -> tuple[Any, ...]:
        return (self._ts(e.ts), e.meter_id, e.kind.value, e.severity.value, e.detail, e.acknowledged, event_key(e))

    def event(self, row: Any) -> Event:
        return Event(ts=self._dt(row[0]), meter_id=row[1], kind=EVENT_KIND[row[2]], severity=SEVERITY[row[3]],
                     detail=row[4], acknowledged=bool(row[5]))

    def deadletter_row(self, d: DeadLetter) -> tuple[Any, ...]:
        return (self._ts(d.ts), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id, deadletter_key(d))

    def deadletter(self, row: Any) -> DeadLetter:
        return DeadLetter(ts=self._dt(row[0]), source=row[1], where=row[2], reason=row[3], detail=row[4],
                          payload=row[5], meter_id=row[6])

    def command_row(self, c: Command) -> tuple[Any, ...]:
        return (
            c.correlation_id, c.meter_id, c.kind.value, self._ts(c.created_at), c.status.value, self._money(c.amount),
            c.reference, self._opt_ts(c.updated_at), c.detail, c.idempotency_key, c.unsent,
        )  # fmt: skip

    def command(self, row: Any) -> Command:
        return Command(
            correlation_id=row[0], meter_id=row[1], kind=COMMAND_KIND[row[2]], created_at=self._dt(row[3]),
            status=COMMAND_STATUS[row[4]], amount=_dec(row[5]), reference=row[6], updated_at=self._opt_dt(row[7]),
            detail=row[8], idempotency_key=row[9], unsent=bool(row[10]),
        )  # fmt: skip
