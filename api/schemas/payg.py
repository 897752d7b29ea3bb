"""PAYG balances, the fleet summary and commands."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas.common import Text
from gateway.model import BalanceUpdate, Command
from storage.records import PaygTotals


class BalanceOut(BaseModel):
    """What a PAYG meter reported about its credit."""

    meter_id: str = Field(examples=["P-0001"])
    ts: datetime = Field(examples=["2026-03-01T12:15:00Z"])
    balance: Decimal = Field(examples=["125.50"])
    currency: str = Field(examples=["KES"])
    emergency_credit: Decimal | None = Field(default=None, examples=["50.00"])
    emergency_credit_in_use: bool = Field(default=False, examples=[False])
    debt: Decimal | None = Field(default=None, examples=["0.00"])
    relay: str | None = Field(default=None, examples=["connected"])
    last_topup_amount: Decimal | None = Field(default=None, examples=["500.00"])
    last_topup_ts: datetime | None = Field(default=None, examples=["2026-02-27T09:30:00Z"])
    low_credit: bool = Field(examples=[False])
    credit_exhausted: bool = Field(examples=[False])
    received_at: datetime | None = Field(default=None, examples=["2026-03-01T12:15:01Z"])

    @staticmethod
    def row(b: BalanceUpdate) -> dict[str, Any]:
        return {"meter_id": b.meter_id, "ts": b.ts, "balance": b.balance, "currency": b.currency,
                "emergency_credit": b.emergency_credit, "emergency_credit_in_use": b.emergency_credit_in_use,
                "debt": b.debt, "relay": b.relay.value if b.relay else None, "last_topup_amount": b.last_topup_amount,
                "last_topup_ts": b.last_topup_ts, "low_credit": b.low_credit, "credit_exhausted": b.credit_exhausted,
                "received_at": b.received_at}


class CurrencyTotals(BaseModel):
    """The PAYG fleet in one currency, from each meter's latest balance."""

    currency: str = Field(examples=["KES"])
    meters: int = Field(description="PAYG meters that reported a balance", examples=[120])
    total_balance: Decimal = Field(examples=["48210.75"])
    total_debt: Decimal = Field(examples=["1200.00"])
    low_credit: int = Field(examples=[9])
    emergency_credit: int = Field(description="Meters using emergency credit now", examples=[3])
    credit_exhausted: int = Field(examples=[2])
    disconnected: int = Field(description="Meters whose relay is open", examples=[4])

    @staticmethod
    def row(t: PaygTotals) -> dict[str, Any]:
        return {"currency": t.currency, "meters": t.meters, "total_balance": t.total_balance,
                "total_debt": t.total_debt, "low_credit": t.low_credit, "emergency_credit": t.emergency_credit,
                "credit_exhausted": t.credit_exhausted, "disconnected": t.disconnected}


class PaygSummary(BaseModel):
    """Totals over the PAYG fleet, per currency."""

    currencies: list[CurrencyTotals]
    low_credit: int = Field(description="Across currencies", examples=[9])
    emergency_credit: int = Field(examples=[3])
    disconnected: int = Field(examples=[4])


class CommandIn(BaseModel):
    """A command to a PAYG meter."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["topup", "disconnect", "reconnect", "token"] = Field(examples=["topup"])
    amount: Decimal | None = Field(default=None, gt=0, max_digits=18, decimal_places=6,
                                   description=("Top-up amount in the meter's currency (top-ups only), with at most "
                                                "the currency's decimals: its ISO 4217 minor unit (KES 2, JPY 0, "
                                                "KWD 3) unless [mqtt] currency_decimals says otherwise"),
                                   examples=["500.00"])
    reference: Text | None = Field(default=None, min_length=1, max_length=200,
                                   description=("Your payment or order reference: it names one command in the whole "
                                                "store, so posting it again returns that command (200) instead of "
                                                "sending another"),
                                   examples=["PAY-2026-000123"])
    token: str | None = Field(default=None, min_length=20, max_length=20, pattern=r"^[0-9]{20}$",
                              description=("The prepayment token to enter (kind token only): an STS token, 20 "
                                           "digits, passed to the meter's Token gateway as it is"),
                              examples=["00001000123456789012"])

    @model_validator(mode="after")
    def _token_with_its_kind(self) -> CommandIn:
        if (self.kind == "token") != (self.token is not None):
            raise ValueError("token: a token command needs 'token' (20 digits), and only a token command takes one")
        return self


class CommandOut(BaseModel):
    """A command and its status as the meter answered it."""

    correlation_id: str = Field(examples=["gw1-7f3a9c2e"])
    meter_id: str = Field(examples=["P-0001"])
    kind: str = Field(examples=["topup"])
    status: str = Field(description="pending | acknowledged | failed | timed_out", examples=["pending"])
    amount: Decimal | None = Field(default=None, examples=["500.00"])
    reference: str | None = Field(default=None, examples=["PAY-2026-000123"])
    created_at: datetime = Field(examples=["2026-03-01T12:15:00Z"])
    updated_at: datetime | None = Field(default=None, examples=["2026-03-01T12:15:02Z"])
    detail: str | None = Field(default=None, examples=[None])
    idempotency_key: str | None = Field(default=None, description="The Idempotency-Key it was sent with",
                                        examples=[None])

    @staticmethod
    def row(c: Command) -> dict[str, Any]:
        return {"correlation_id": c.correlation_id, "meter_id": c.meter_id, "kind": c.kind.value,
                "status": c.status.value, "amount": c.amount, "reference": c.reference, "created_at": c.created_at,
                "updated_at": c.updated_at, "detail": c.detail, "idempotency_key": c.idempotency_key}
