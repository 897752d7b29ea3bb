"""PAYG (prepayment) balance updates (SPEC §3). Money is Decimal, never float."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Relay(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    """What a PAYG meter reported about its credit at `ts`."""

    meter_id: str
    ts: datetime
    balance: Decimal
    currency: str
    emergency_credit: Decimal | None = None
    emergency_credit_in_use: bool = False
    debt: Decimal | None = None
    relay: Relay | None = None
    last_topup_amount: Decimal | None = None
    last_topup_ts: datetime | None = None
    low_credit: bool = False
    credit_exhausted: bool = False
    received_at: datetime | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class BalanceTerms:
    """How one PAYG meter's balance updates are read and judged: the currency they are in when they
    name none, the balance at or below which credit is low, and the fastest plausible fall per hour
    (None: learned from the meter). A driver's settings give them; the normaliser and the PAYG
    checker use them."""

    currency: str = "XXX"
    low_credit_threshold: Decimal = Decimal("5")
    max_drain_per_hour: Decimal | None = None
    #: Decimals an amount may carry per currency where the vendor counts finer than ISO 4217.
    currency_decimals: Mapping[str, int] = field(default_factory=dict)
