"""Plausibility bounds at normalise: what no meter can have meant is refused before the spool.

The payload parser (`normalise/payload.py`) refuses what no store can *represent*; these bounds
refuse what no meter can *mean*, per field and per channel, so garbage never becomes data and
nothing is left for a database to reject:

- money (balance, debt, emergency credit, last top-up amount): ``|amount| <= money_max`` in the
  currency's major unit (default 10^9; `money_max_by_currency` per code), with at most the
  currency's decimals (ISO 4217's minor unit, or ``[mqtt] currency_decimals``; 4 for codes the
  list gives none, such as XXX) plus `extra_decimals` (default 2);
- the currency: three capital letters (ISO 4217's shape) and on the allow-list (default: the
  ISO 4217 table; each meter's configured currency is always allowed);
- timestamps: not before `ts_floor` (default 2010-01-01, after the RTC resets of 1970 and 2000)
  or the meter's installation (`installed`: the later of its `[[meters]] installed_at` and the
  registry's, which the runtime refreshes: gateway/runtime/installed.py); not more than
  `max_ahead` (default 1 day) after receipt, for every time a meter's clock stamps: a balance's
  `ts` and `last_topup_ts`, a coded value's (RawObjects) telegram time (`ahead`). A PAYG payload
  format's tighter `max_future` ([mqtt], 300 s) is the same check: beyond it a balance would
  shadow every later one (`future_ts`). Polled registers carry the gateway's time, not the
  meter's: none is ahead, but one polled before the meter's installation is refused too;
- readings: within the channel's physical range (`channels`, canonical units), before VEE.
  These are far wider than VEE's limits: VEE's ``out_of_range`` stays for values a meter can
  read but should not (a 300 V phase); these are values no meter reads (3.4e38 V).

Every refusal names the field, the value (shortened) and the bound. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any

import numpy as np

from gateway.model import DeadLetter, Reading
from gateway.model.currencies import MINOR_UNITS, allowed_decimals, decimals_of
from gateway.model.frame import F64
from gateway.model.payg import BalanceUpdate
from gateway.model.readings import TOU_CHANNELS, UNITS, Channel

__all__ = ["CHANNEL_LIMITS", "REASONS", "Bounds", "Limits", "Refused", "ahead", "limits_of", "outside_range",
           "too_deep"]

#: Stable dead-letter reasons of these checks.
REASONS = frozenset({"implausible_amount", "implausible_decimals", "bad_currency", "implausible_ts",
                     "implausible_value"})

Limits = Mapping[Channel, tuple[float, float]]
#: Physical range of each channel in its canonical unit (gateway/model/readings.py UNITS): no
#: meter reads beyond them, whatever it meters. A register that decodes past them is garbage.
CHANNEL_LIMITS: Limits = {
    Channel.ENERGY_IMPORT: (-1e12, 1e12),  # kWh: a register of 12 digits; VEE rejects the negatives
    Channel.ENERGY_EXPORT: (-1e12, 1e12),
    Channel.HEAT_ENERGY: (-1e12, 1e12),
    Channel.VOLUME: (-1e12, 1e12),  # m3
    Channel.POWER: (-1e7, 1e7),  # kW: 10 GW
    Channel.VOLTAGE_L1: (-2e6, 2e6),  # V: above the highest transmission voltage
    Channel.VOLTAGE_L2: (-2e6, 2e6),
    Channel.VOLTAGE_L3: (-2e6, 2e6),
    Channel.CURRENT_L1: (-1e6, 1e6),  # A
    Channel.CURRENT_L2: (-1e6, 1e6),
    Channel.CURRENT_L3: (-1e6, 1e6),
    Channel.FREQUENCY: (0.0, 1e4),  # Hz
    Channel.POWER_FACTOR: (-100.0, 100.0),  # a factor, or a meter that says it in percent (VEE rejects > 1)
    Channel.FLOW: (-1e7, 1e7),  # m3/h
    Channel.TEMPERATURE_FLOW: (-273.15, 1e4),  # °C: not below absolute zero
    Channel.TEMPERATURE_RETURN: (-273.15, 1e4),
    **{tou: (-1e12, 1e12) for total in TOU_CHANNELS for tou in TOU_CHANNELS[total]},
}
#: Decimals an amount may carry in a currency ISO 4217 gives no minor unit (XXX, XAU, ...): the
#: largest minor unit the list has (CLF, UYW).
NA_DECIMALS = 4
_ISO_SHAPE = re.compile(r"[A-Z]{3}")
#: Deeper than any payload layout needs (a mapping's pointer walks a few levels).
MAX_DEPTH = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_MONEY = ("balance", "emergency_credit", "debt", "last_topup_amount")


class Refused(ValueError):
    """A value outside its bound: the dead letter's reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def _show(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bounds of one gateway (`[plausibility]`); the defaults are the documented ones."""

    money_max: Decimal = Decimal(10) ** 9
    money_max_by_currency: Mapping[str, Decimal] = field(default_factory=dict)
    extra_decimals: int = 2
    #: Allowed currency codes; None: every code of the ISO 4217 table.
    currencies: frozenset[str] | None = None
    ts_floor: datetime = datetime(2010, 1, 1, tzinfo=UTC)
    #: Per meter: its installation; nothing it measured is older. The runtime swaps a new Bounds in
    #: when the registry's dates change, so a Bounds itself never changes.
    installed: Mapping[str, datetime] = field(default_factory=dict)
    #: Nothing a meter's clock stamps lies further after its receipt.
    max_ahead: timedelta = timedelta(days=1)
    channels: Mapping[Channel, tuple[float, float]] = field(default_factory=lambda: dict(CHANNEL_LIMITS))

    def __post_init__(self) -> None:
        problems = []
        if self.money_max <= 0 or any(v <= 0 for v in self.money_max_by_currency.values()):
            problems.append("money_max must be > 0")
        if self.extra_decimals < 0:
            problems.append(f"extra_decimals must be >= 0, got {self.extra_decimals}")
        if self.ts_floor.tzinfo is None:
            problems.append("ts_floor needs a time zone")
        if self.max_ahead <= timedelta(0):
            problems.append(f"max_ahead must be > 0, got {self.max_ahead}")
        problems += [f"channels.{c.value}: low {lo} is above high {hi}" for c, (lo, hi) in self.channels.items()
                     if not lo <= hi]
        if problems:
            msg = "plausibility: " + "; ".join(problems)
            raise ValueError(msg)

    # -- balances --------------------------------------------------------------------------------
    def floor(self, meter_id: str) -> datetime:
        """The earliest time a measurement of this meter may carry."""
        installed = self.installed.get(meter_id)
        return self.ts_floor if installed is None or installed < self.ts_floor else installed

    def money_limit(self, currency: str) -> Decimal:
        return self.money_max_by_currency.get(currency, self.money_max)

    def max_decimals(self, currency: str, overrides: Mapping[str, int] | None = None) -> int:
        allowed = allowed_decimals(currency, overrides)
        return (NA_DECIMALS if allowed is None else allowed) + self.extra_decimals

    def currency_allowed(self, currency: str, configured: str) -> bool:
        """ISO 4217's shape and on the allow-list; the meter's configured currency always is."""
        if not _ISO_SHAPE.fullmatch(currency):
            return False
        return currency == configured or currency in (MINOR_UNITS if self.currencies is None else self.currencies)

    def balance(self, update: BalanceUpdate, *, configured: str = "XXX", max_future: timedelta = timedelta(minutes=5),
                decimals: Mapping[str, int] | None = None) -> None:
        """Raise Refused for the first field of `update` outside its bound."""
        currency = update.currency
        if not self.currency_allowed(currency, configured):
            why = ("three capital letters (ISO 4217)" if not _ISO_SHAPE.fullmatch(currency) else
                   "a code of ISO 4217" if self.currencies is None else "one of [plausibility] currencies")
            raise Refused("bad_currency", f"field 'currency' {_show(currency)!r} is not {why}")
        limit = self.money_limit(currency)
        most = self.max_decimals(currency, decimals)
        for name in _MONEY:
            amount: Decimal | None = getattr(update, name)
            if amount is None:
                continue
            if amount.copy_abs() > limit:
                raise Refused("implausible_amount", f"field '{name}' {_show(amount)} {currency} is beyond ±{limit.normalize():,f} "
                              f"{currency} ([plausibility] money_max)")
            places = decimals_of(amount)
            if places > most:
                raise Refused("implausible_decimals", f"field '{name}' {_show(amount)} has {places} decimal places; "
                              f"{currency} allows at most {most} (its minor unit + [plausibility] extra_decimals)")
        # The ts's distance ahead of receipt is the payload format's check (PayloadFormat.parse), by `ahead`.
        refused = self.stamped(update.meter_id, "field 'ts'", update.ts)
        if refused is not None:
            raise refused
        topup = update.last_topup_ts
        if topup is not None:
            if topup < self.ts_floor:
                raise Refused("implausible_ts", f"field 'last_topup_ts' {topup.isoformat()} is before "
                              f"{self.ts_floor.isoformat()} ([plausibility] ts_floor)")
            refused = ahead("field 'last_topup_ts'", topup, update.received_at or update.ts, self.max_ahead, max_future)
            if refused is not None:
                raise refused

    def _floor_key(self, meter_id: str) -> str:
        return "the meter's installed_at" if self.floor(meter_id) != self.ts_floor else "[plausibility] ts_floor"

    # -- readings --------------------------------------------------------------------------------
    def reading(self, r: Reading) -> Refused | None:
        """The bound one reading breaks, or None. Its ts is the meter's clock (a coded value's
        telegram time): VEE flags one a little ahead (future_ts), this refuses one far ahead."""
        return self._value(r.meter_id, r.channel, r.ts, r.value, r.received_at)

    def _value(self, meter_id: str, channel: Channel, ts: datetime, value: float,
               received: datetime | None = None) -> Refused | None:
        low, high = self.channels.get(channel, (-math.inf, math.inf))
        if not low <= value <= high:
            return self._out_of_range(channel, value, low, high)
        return self.stamped(meter_id, f"{channel.value}: ts", ts, received)

    def stamped(self, meter_id: str, what: str, ts: datetime, received: datetime | None = None) -> Refused | None:
        """The time bound `ts` breaks (before the meter's floor, or `max_ahead` after `received`), or None."""
        floor = self.floor(meter_id)
        if ts < floor:
            return Refused("implausible_ts", f"{what} {ts.isoformat()} is before {floor.isoformat()} "
                           f"({self._floor_key(meter_id)})")
        return None if received is None else ahead(what, ts, received, self.max_ahead)

    def readings(self, readings: list[Reading]) -> tuple[list[Reading], list[DeadLetter]]:
        """The readings within bounds, and a dead letter for each of the others."""
        kept, dead = [], []
        for r in readings:
            refused = self.reading(r)
            if refused is None:
                kept.append(r)
            else:
                dead.append(_dead(r.received_at or r.ts, r.source.value, r.meter_id, refused, r.value))
        return kept, dead

    @staticmethod
    def _out_of_range(channel: Channel, value: float, low: float, high: float) -> Refused:
        return Refused("implausible_value", outside_range(channel, value, low, high))


def ahead(what: str, ts: datetime, received: datetime, max_ahead: timedelta | None,
          max_future: timedelta | None = None) -> Refused | None:
    """The refusal of a time `ts` too far after its receipt, or None: the one rule of every sample
    kind and time field. Beyond `max_ahead` ([plausibility]; None: no bound) no meter's clock meant
    it: implausible_ts. Beyond a PAYG format's tighter `max_future` ([mqtt]) a balance would shadow
    every later update: future_ts."""
    for limit, reason, key in ((max_ahead, "implausible_ts", " ([plausibility] max_ahead)"),
                               (max_future, "future_ts", "")):
        if limit is not None and ts > received + limit:
            return Refused(reason, f"{what} {ts.isoformat()} is more than {limit.total_seconds():g} s after receipt "
                           f"({received.isoformat()}){key}")
    return None


def outside_range(channel: Channel, value: float, low: float, high: float) -> str:
    """What a dead letter says of a value outside its channel's physical range."""
    unit = f" {UNITS[channel]}" if UNITS[channel] else ""
    return (f"{_show(f'{value:g}')}{unit} is outside the physical range of {channel.value}, {low:g}..{high:g}{unit} "
            f"([plausibility.channels] {channel.value})")


def too_deep(text: str) -> bool:
    """JSON text whose arrays and objects nest deeper than MAX_DEPTH (strings left out). The
    decoder's own limit is the interpreter's recursion limit, which anything in the process may
    raise: a payload is refused the same way whatever it is. Counting brackets first keeps the
    usual payload at two `str.count`s."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _BRACKETS.findall(_STRINGS.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0) > MAX_DEPTH


def limits_of(channels: Sequence[Channel], limits: Limits) -> tuple[F64, F64]:
    """Low and high of each of `channels` as arrays (no limit: infinite), for a columnar check."""
    low, high = zip(*(limits.get(c, (-math.inf, math.inf)) for c in channels), strict=True)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def _dead(ts: datetime, source: str, meter_id: str, refused: Refused, value: float) -> DeadLetter:
    return DeadLetter(ts=ts, source=source, where=meter_id, reason=refused.reason, detail=str(refused),
                      payload=_show(repr(value), 60), meter_id=meter_id)
