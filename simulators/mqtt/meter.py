"""One simulated PAYG (prepayment) meter: a credit account drained by a household's consumption.

Each `step()` is one stretch of simulated time (`step_s`, a quarter of an hour by default): the
household draws power following a daily shape (low at night, peaks in the morning and evening),
the energy is charged at the meter's tariff, and credit runs down. At zero the meter switches to
emergency credit; when that is used up the relay opens. Customers top up now and then, more
often when credit is low and almost surely once the lights are out; a top-up first repays the
emergency credit used, then a share goes to debt recovery, the rest is credit. A disconnect
command holds the relay open until a reconnect command.

The same seed gives the same sequence (each meter has its own random stream).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["SimPaygMeter"]

_CENT = Decimal("0.01")
#: Share of the day's mean load drawn at each hour (0..23): night, morning peak, day, evening peak.
_DAY_SHAPE = (0.5, 0.45, 0.45, 0.45, 0.5, 0.7, 1.4, 1.8, 1.5, 0.9, 0.8, 0.8,
              0.9, 0.8, 0.8, 0.9, 1.1, 1.6, 2.2, 2.3, 2.0, 1.6, 1.1, 0.7)
_TOPUPS = (Decimal(100), Decimal(200), Decimal(500), Decimal(1000))
#: Share of every top-up that goes to paying off debt, while there is debt.
DEBT_RECOVERY = Decimal("0.10")


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class SimPaygMeter:
    """A meter's credit account; `step()` advances it one stretch of simulated time."""

    meter_id: str
    rng: random.Random
    balance: Decimal
    #: Price of energy, currency units per kWh.
    tariff: Decimal
    #: The household's mean load, kW.
    base_kw: float
    debt: Decimal
    emergency_limit: Decimal = Decimal("50.00")
    emergency_credit: Decimal = Decimal("50.00")  # still available
    emergency_in_use: bool = False
    relay: str = "connected"
    #: Held open by a disconnect command until a reconnect command.
    forced_off: bool = False
    low_credit: Decimal = Decimal("50.00")  # the customer tops up more readily below this
    last_topup_amount: Decimal | None = None
    last_topup_ts: datetime | None = None
    #: Simulated local time: drives the daily shape of the load only (message times are real).
    sim_time: datetime = field(default_factory=lambda: datetime(2024, 1, 1))
    step_s: float = 900.0
    fault: str | None = None
    #: A message kept back to be sent after the next one (fault "out_of_order").
    held: tuple[bytes, datetime, Decimal | None] | None = None
    kwh: float = 0.0  # energy delivered so far

    @classmethod
    def create(cls, meter_id: str, seed: int, *, step_s: float = 900.0) -> SimPaygMeter:
        rng = random.Random(f"{seed}:{meter_id}")
        return cls(
            meter_id=meter_id,
            rng=rng,
            balance=Decimal(rng.randint(2_000, 200_000)) / 100,
            tariff=Decimal(rng.randint(1800, 3000)) / 100,
            base_kw=rng.uniform(0.1, 0.6),
            debt=Decimal(rng.choice([0, 0, 0, 25_000, 50_000])) / 100,
            step_s=step_s,
        )

    @property
    def exhausted(self) -> bool:
        return self.balance <= 0

    def step(self, ts: datetime) -> bool:
        """Advance one stretch of simulated time. True if something changed that a meter reports
        at once (a top-up, the relay, emergency credit), besides the balance running down."""
        before = (self.relay, self.emergency_in_use, self.last_topup_ts)
        self.sim_time += timedelta(seconds=self.step_s)
        if self.relay == "connected":
            self._consume()
        # Customers top up now and then: readily when told credit is low, surely once cut off.
        if self.relay == "disconnected" and not self.forced_off:
            chance = 0.25
        elif self.balance <= self.low_credit:
            chance = 0.06
        else:
            chance = 0.01
        if self.rng.random() < chance:
            self.topup(self.rng.choice(_TOPUPS), ts)
        self._update_relay()
        return (self.relay, self.emergency_in_use, self.last_topup_ts) != before

    def _consume(self) -> None:
        shape = _DAY_SHAPE[self.sim_time.hour]
        kw = self.base_kw * shape * self.rng.uniform(0.7, 1.3)
        kwh = kw * self.step_s / 3600
        self.kwh += kwh
        cost = (Decimal(repr(kwh)) * self.tariff).quantize(_CENT, rounding=ROUND_HALF_UP)
        if cost <= self.balance:
            self.balance -= cost
            return
        short = cost - self.balance
        self.balance = Decimal("0.00")
        if self.emergency_credit > 0:
            # Emergency credit switches in when the credit runs out (a real meter may want a button).
            self.emergency_in_use = True
            self.emergency_credit = max(Decimal("0.00"), self.emergency_credit - short)

    def topup(self, amount: Decimal, ts: datetime) -> None:
        """Credit a payment: repay emergency credit used, recover some debt, the rest is credit."""
        self.last_topup_amount, self.last_topup_ts = amount, ts
        rest = amount
        repay = min(rest, self.emergency_limit - self.emergency_credit)
        self.emergency_credit += repay
        rest -= repay
        recovered = min(self.debt, (rest * DEBT_RECOVERY).quantize(_CENT))
        self.debt -= recovered
        self.balance += rest - recovered
        if self.balance > 0:
            self.emergency_in_use = False
        self._update_relay()

    def disconnect(self) -> None:
        self.forced_off = True
        self._update_relay()

    def reconnect(self) -> None:
        self.forced_off = False
        self._update_relay()

    def _update_relay(self) -> None:
        has_credit = self.balance > 0 or (self.emergency_in_use and self.emergency_credit > 0)
        self.relay = "connected" if has_credit and not self.forced_off else "disconnected"

    def message(self, ts: datetime, currency: str = "") -> dict[str, Any]:
        """The balance update the meter publishes now, in the gateway's default JSON layout."""
        msg: dict[str, Any] = {
            "ts": _iso(ts),
            "balance": self.balance.quantize(_CENT),
            "currency": currency,
            "emergency_credit": self.emergency_credit.quantize(_CENT),
            "emergency_credit_in_use": self.emergency_in_use,
            "debt": self.debt.quantize(_CENT),
            "relay": self.relay,
        }
        if self.last_topup_amount is not None and self.last_topup_ts is not None:
            msg["last_topup"] = {"amount": self.last_topup_amount, "ts": _iso(self.last_topup_ts)}
        return msg
