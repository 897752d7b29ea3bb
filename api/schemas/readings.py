from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from gateway.model import UNITS, BalanceUpdate, Reading

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page; null at the end")


class ReadingOut(BaseModel):
    meter_id: str = Field(examples=["M-0001"])
    channel: str = Field(examples=["energy_import"])
    ts: datetime
    value: float = Field(examples=[1234.5])
    unit: str = Field(examples=["kWh"])
    kind: str = Field(examples=["cumulative"])
    status: str = Field(examples=["valid"])
    quality: list[str] = Field(description="VEE quality flags", examples=[["rollover"]])
    source: str = Field(examples=["modbus"])
    received_at: datetime | None = None
    seq: int | None = None

    @classmethod
    def of(cls, r: Reading) -> ReadingOut:
        return cls(meter_id=r.meter_id, channel=r.channel.value, ts=r.ts, value=r.value, unit=UNITS[r.channel],
                   kind=r.kind.value, status=r.status.value, quality=r.quality.names(), source=r.source.value,
                   received_at=r.received_at, seq=r.seq)


class BalanceOut(BaseModel):
    meter_id: str
    ts: datetime
    balance: Decimal = Field(examples=["125.50"])
    currency: str = Field(examples=["KES"])
    emergency_credit: Decimal | None = None
    emergency_credit_in_use: bool = False
    debt: Decimal | None = None
    relay: str | None = Field(default=None, examples=["connected"])
    last_topup_amount: Decimal | None = None
    last_topup_ts: datetime | None = None
    low_credit: bool
    credit_exhausted: bool
    received_at: datetime | None = None

    @classmethod
    def of(cls, b: BalanceUpdate) -> BalanceOut:
        return cls(meter_id=b.meter_id, ts=b.ts, balance=b.balance, currency=b.currency,
                   emergency_credit=b.emergency_credit, emergency_credit_in_use=b.emergency_credit_in_use,
                   debt=b.debt, relay=b.relay.value if b.relay else None, last_topup_amount=b.last_topup_amount,
                   last_topup_ts=b.last_topup_ts, low_credit=b.low_credit, credit_exhausted=b.credit_exhausted,
                   received_at=b.received_at)
