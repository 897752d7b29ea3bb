"""The `[plausibility]` section: what no meter can have meant, refused at normalise before the spool
(see gateway/normalise/plausibility.py for the checks and the channels' default ranges).

Example::

    [plausibility]
    money_max = 1_000_000_000            # |amount| in the currency's major unit (balance, debt, ...)
    money_max_by_currency = { IRR = 1e13 }
    extra_decimals = 2                   # decimals beyond the currency's minor unit
    currencies = []                      # allow-list; empty: every ISO 4217 code
    ts_floor = 2010-01-01T00:00:00Z      # nothing measured before this
    max_ahead = 86400                    # seconds a meter's time may lie after receipt
    installed_refresh = 30               # seconds between reads of the registry's installed_at

    [plausibility.channels]
    voltage_l1 = [0, 1000]               # low, high in the canonical unit (V)

A meter's installation raises the floor for that meter: the later of its `[[meters]] installed_at`
and the registry's `installed_at` (set through the API, `PATCH /v1/meters/{id}`), which the gateway
reads at start and every `installed_refresh` seconds (gateway/runtime/installed.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.model.readings import Channel

_CODE = re.compile(r"[A-Z]{3}")


def aware(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC, as payloads' times are."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class PlausibilitySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    money_max: Decimal = Field(default=Decimal(10) ** 9, gt=0, allow_inf_nan=False, description=(
        "Largest |amount| of a balance, debt, emergency credit or top-up, in the currency's major unit "
        "(default 10^9: 1,000,000,000 KES); beyond it a message is dead-lettered (implausible_amount)"))
    money_max_by_currency: dict[str, Decimal] = Field(default_factory=dict, description=(
        "money_max per currency code, e.g. { IRR = 1e13 } for a currency of many digits"))
    extra_decimals: int = Field(default=2, ge=0, le=12, description=(
        "Decimals an amount may carry beyond its currency's minor unit (ISO 4217, or [mqtt] currency_decimals; "
        "4 for a code without one, such as XXX); more is implausible_decimals"))
    currencies: list[str] = Field(default_factory=list, description=(
        "Currency codes a message may name (three capitals); empty (the default): every ISO 4217 code. A meter's "
        "configured currency is always allowed. Another code is bad_currency"))
    ts_floor: datetime = Field(default=datetime(2010, 1, 1, tzinfo=UTC), description=(
        "Nothing measured before this time is data (default 2010-01-01T00:00:00Z, after the 1970 and 2000 "
        "resets of meters' clocks); a time without a zone is UTC. Earlier is implausible_ts"))
    max_ahead: float = Field(default=86400.0, gt=0, allow_inf_nan=False, description=(
        "Seconds a time a meter stamps (a balance's ts and last top-up ts, a coded value's telegram time) may lie "
        "after the gateway received it (default 86400: 1 day); beyond it the message is implausible_ts. VEE flags "
        "readings a little ahead (future_ts, [vee] future_seconds); [mqtt] max_future refuses balances a little ahead"))
    installed_refresh: float = Field(default=30.0, gt=0, le=86400, allow_inf_nan=False, description=(
        "Seconds between reads of the registry's installation dates (installed_at, set through the API): a date set "
        "or moved takes effect within this time. A meter's floor is the later of that date and its [[meters]] "
        "installed_at"))
    channels: dict[Channel, tuple[float, float]] = Field(default_factory=dict, description=(
        "Physical range [low, high] of a channel in its canonical unit, overriding the built-in one "
        "(e.g. voltage_l1 = [0, 2e6]); outside it a reading is implausible_value, before VEE"))

    @field_validator("money_max_by_currency", "currencies")
    @classmethod
    def _codes(cls, value: dict[str, Decimal] | list[str]) -> dict[str, Decimal] | list[str]:
        wrong = [c for c in value if not _CODE.fullmatch(c)]
        if wrong:
            msg = f"{', '.join(repr(c) for c in wrong)}: a currency is three capital letters (ISO 4217), e.g. 'KES'"
            raise ValueError(msg)
        if isinstance(value, dict) and any(not v.is_finite() or v <= 0 for v in value.values()):
            msg = "each money_max must be a number > 0"
            raise ValueError(msg)
        return value

    @field_validator("ts_floor")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        out = aware(value)
        assert out is not None
        return out

    @field_validator("channels")
    @classmethod
    def _ranges(cls, value: dict[Channel, tuple[float, float]]) -> dict[Channel, tuple[float, float]]:
        wrong = [f"{c.value} = [{lo:g}, {hi:g}]" for c, (lo, hi) in value.items() if not lo <= hi]
        if wrong:
            msg = f"{', '.join(wrong)}: low must not be above high"
            raise ValueError(msg)
        return value


__all__ = ["PlausibilitySection", "aware"]
