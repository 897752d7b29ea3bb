"""Builders of canonical records for the storage tests (every field set, nothing default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from gateway.model import (
    BalanceUpdate,
    Channel,
    DeadLetter,
    Event,
    EventKind,
    Kind,
    Meter,
    MeterStatus,
    Protocol,
    Quality,
    Reading,
    Relay,
    Severity,
    Source,
    Status,
    Utility,
)

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def reading(meter_id: str = "M-1", channel: Channel = Channel.ENERGY_IMPORT, minutes: float = 0,
            value: float = 1.0, **fields: object) -> Reading:  # fmt: skip
    """A reading `minutes` after T0; cumulative channels get kind cumulative."""
    kind = Kind.CUMULATIVE if channel in {Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT, Channel.VOLUME,
                                          Channel.HEAT_ENERGY} else Kind.INSTANTANEOUS  # fmt: skip
    base = {"kind": kind, "received_at": T0 + timedelta(minutes=minutes, seconds=2)}
    return Reading(meter_id, channel, T0 + timedelta(minutes=minutes), value, **{**base, **fields})  # type: ignore[arg-type]


def full_reading() -> Reading:
    """Every field away from its default, in a non-UTC zone, with a float that is not exact
    in decimal (0.1 + 0.2) and flags combined."""
    plus_two = timezone(timedelta(hours=2))
    return Reading(
        meter_id="M-ROUND",
        channel=Channel.VOLUME,
        ts=datetime(2024, 3, 1, 14, 30, 15, 654321, tzinfo=plus_two),
        value=0.1 + 0.2,
        kind=Kind.CUMULATIVE,
        quality=Quality.ROLLOVER | Quality.GAP | Quality.ESTIMATED,
        status=Status.SUSPECT,
        source=Source.MQTT,
        received_at=datetime(2024, 3, 1, 12, 30, 16, 1, tzinfo=UTC),
        note="rollover at modulus 100000",
    )


def balance(meter_id: str = "P-1", minutes: float = 0, amount: str = "12.34") -> BalanceUpdate:
    """A balance update with every optional field set."""
    return BalanceUpdate(
        meter_id=meter_id,
        ts=T0 + timedelta(minutes=minutes),
        balance=Decimal(amount),
        currency="KES",
        emergency_credit=Decimal("50.00"),
        emergency_credit_in_use=True,
        debt=Decimal("-0.005"),
        relay=Relay.DISCONNECTED,
        last_topup_amount=Decimal("1000.10"),
        last_topup_ts=T0 - timedelta(days=3, microseconds=7),
        low_credit=True,
        credit_exhausted=False,
        received_at=T0 + timedelta(minutes=minutes, seconds=1),
    )


def event(minutes: float = 0, meter_id: str | None = "M-1", kind: EventKind = EventKind.COMM_LOST) -> Event:
    return Event(T0 + timedelta(minutes=minutes), meter_id, kind, Severity.WARNING, f"{kind} at +{minutes} min",
                 acknowledged=True)  # fmt: skip


def deadletter(minutes: float = 0, reason: str = "malformed_json", meter_id: str | None = None) -> DeadLetter:
    return DeadLetter(
        ts=T0 + timedelta(minutes=minutes),
        source="mqtt",
        where="payg/P-9/balance",
        reason=reason,
        detail="Expecting value: line 1 column 1 (char 0)",
        payload='{"balance": ',
        meter_id=meter_id,
    )


def meter(meter_id: str, *, device_number: str | None = None, consumer_number: str | None = None,
          **fields: object) -> Meter:  # fmt: skip
    base: dict[str, object] = {
        "utility": Utility.ELECTRICITY,
        "protocol": Protocol.MODBUS_TCP,
        "address": "10.0.0.7:502/3",
        "model": "sdm630",
        "device_number": device_number,
        "payg": False,
        "status": MeterStatus.ACTIVE,
        "installed_at": datetime(2023, 5, 17, 8, 0, tzinfo=UTC),
        "consumer_number": consumer_number,
        "location": "12 Harbour Road, flat 3",
        "tags": {"feeder": "F7", "phase": "3"},
    }
    return Meter(meter_id=meter_id, **{**base, **fields})  # type: ignore[arg-type]


def record_latest_batches(store: object) -> list[list[str]] | None:
    """The meter ids of each query a TimescaleDB store's "latest" coalescer runs from now on
    (storage.coalesce), as a list that fills as they run; None for a store without one."""
    coalescer = getattr(store, "_latest", None)
    if coalescer is None:
        return None
    batches: list[list[str]] = []
    fetch = coalescer._fetch

    async def recorded(keys: list[str]) -> Any:
        batches.append(keys)
        return await fetch(keys)

    coalescer._fetch = recorded
    return batches
