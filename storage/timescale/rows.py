"""Rows of the PostgreSQL store <-> the model. Column lists and converters, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from gateway.model import BalanceUpdate, Command, DeadLetter, Event, Meter, Reading
from storage import rows as enums
from storage.identity import deadletter_key, event_key

#: What a write sends: the store adds seq and its own gateway_id.
READING_IN = "meter_id, channel, ts, value, kind, quality, status, source, received_at, note"
READING_COLS = f"seq, {READING_IN}, gateway_id"
#: Binary COPY types of READING_IN, in order.
READING_TYPES = ["text", "text", "timestamptz", "float8", "text", "int4", "text", "text", "timestamptz", "text"]
BALANCE_COLS = (
    "seq, meter_id, ts, balance, currency, emergency_credit, emergency_credit_in_use, debt, relay,"
    " last_topup_amount, last_topup_ts, low_credit, credit_exhausted, received_at"
)
BALANCE_IN = BALANCE_COLS.removeprefix("seq, ")
#: Binary COPY types of BALANCE_IN, in order (money columns are numeric: Decimal, exact).
BALANCE_TYPES = [
    "text", "timestamptz", "numeric", "text", "numeric", "bool", "numeric", "text", "numeric", "timestamptz",
    "bool", "bool", "timestamptz",
]  # fmt: skip
METER_COLS = (
    "meter_id, utility, protocol, address, model, device_number, payg, status, installed_at,"
    " consumer_number, location, tags"
)
EVENT_COLS = "ts, meter_id, kind, severity, detail, acknowledged"
DEADLETTER_COLS = "ts, source, origin, reason, detail, payload, meter_id"
COMMAND_COLS = ("correlation_id, meter_id, kind, created_at, status, amount, reference, updated_at, detail,"
                " idempotency_key, unsent")


def utc(dt: datetime) -> datetime:
    """Naive datetimes are UTC (the model's rule); results are always tz-aware UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else utc(dt)


def reading_row(r: Reading) -> tuple[Any, ...]:
    return (
        r.meter_id, r.channel.value, utc(r.ts), r.value, r.kind.value, int(r.quality),
        r.status.value, r.source.value, opt_utc(r.received_at), r.note,
    )  # fmt: skip


def reading(row: Any) -> Reading:
    # The session time zone is UTC (see store._configure): timestamps come back in UTC.
    return Reading(
        row[1], enums.CHANNEL[row[2]], row[3], row[4], enums.KIND[row[5]], enums.quality(row[6]),
        enums.STATUS[row[7]], enums.SOURCE[row[8]], row[9], row[0], row[10], row[11],
    )  # fmt: skip


def balance_row(b: BalanceUpdate) -> tuple[Any, ...]:
    return (
        b.meter_id, utc(b.ts), b.balance, b.currency, b.emergency_credit, b.emergency_credit_in_use,
        b.debt, None if b.relay is None else b.relay.value, b.last_topup_amount, opt_utc(b.last_topup_ts),
        b.low_credit, b.credit_exhausted, opt_utc(b.received_at),
    )  # fmt: skip


def balance(row: Any) -> BalanceUpdate:
    return BalanceUpdate(
        seq=row[0], meter_id=row[1], ts=utc(row[2]), balance=Decimal(row[3]), currency=row[4],
        emergency_credit=row[5], emergency_credit_in_use=row[6], debt=row[7],
        relay=None if row[8] is None else enums.RELAY[row[8]], last_topup_amount=row[9],
        last_topup_ts=opt_utc(row[10]), low_credit=row[11], credit_exhausted=row[12],
        received_at=opt_utc(row[13]),
    )  # fmt: skip


def meter_row(m: Meter, now: datetime) -> tuple[Any, ...]:
    return (
        m.meter_id, m.utility.value, m.protocol.value, m.address, m.model, m.device_number, m.payg,
        m.status.value, opt_utc(m.installed_at), m.consumer_number, m.location, Jsonb(m.tags), now, now,
    )  # fmt: skip


def meter(row: Any) -> Meter:
    return Meter(
        meter_id=row[0], utility=enums.UTILITY[row[1]], protocol=enums.PROTOCOL[row[2]], address=row[3],
        model=row[4], device_number=row[5], payg=row[6], status=enums.METER_STATUS[row[7]],
        installed_at=opt_utc(row[8]), consumer_number=row[9], location=row[10], tags=dict(row[11]),
    )  # fmt: skip


def event_row(e: Event) -> tuple[Any, ...]:
    return (utc(e.ts), e.meter_id, e.kind.value, e.severity.value, e.detail, e.acknowledged, event_key(e))


def event(row: Any) -> Event:
    return Event(
        ts=utc(row[0]), meter_id=row[1], kind=enums.EVENT_KIND[row[2]], severity=enums.SEVERITY[row[3]],
        detail=row[4], acknowledged=row[5],
    )  # fmt: skip


def deadletter_row(d: DeadLetter) -> tuple[Any, ...]:
    return (utc(d.ts), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id, deadletter_key(d))


def deadletter(row: Any) -> DeadLetter:
    return DeadLetter(
        ts=utc(row[0]), source=row[1], where=row[2], reason=row[3], detail=row[4],
        payload=row[5], meter_id=row[6],
    )  # fmt: skip


def command_row(c: Command) -> tuple[Any, ...]:
    return (
        c.correlation_id, c.meter_id, c.kind.value, utc(c.created_at), c.status.value, c.amount, c.reference,
        opt_utc(c.updated_at), c.detail, c.idempotency_key, c.unsent,
    )  # fmt: skip


def command(row: Any) -> Command:
    return Command(
        correlation_id=row[0], meter_id=row[1], kind=enums.COMMAND_KIND[row[2]], created_at=utc(row[3]),
        status=enums.COMMAND_STATUS[row[4]], amount=row[5], reference=row[6], updated_at=opt_utc(row[7]),
        detail=row[8], idempotency_key=row[9], unsent=bool(row[10]),
    )  # fmt: skip
