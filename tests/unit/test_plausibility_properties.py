"""Issue 19 item 4 as properties (hypothesis): arbitrary bytes, arbitrary JSON and balance messages
whose every field may be odd never raise out of normalise, under any bounds a configuration can
set; and whatever is accepted, a balance update or a reading, satisfies every bound of
[plausibility]. The garbage kinds of tests/garbage.py are explicit examples.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.model import BalanceUpdate, Channel, Source
from gateway.model.currencies import MINOR_UNITS, allowed_decimals, decimals_of
from gateway.model.profiles import ObjectMap
from gateway.model.samples import RawObjects, RawPayload, RawRegisters
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.payload import REASONS as PAYLOAD_REASONS
from gateway.normalise.plausibility import CHANNEL_LIMITS, NA_DECIMALS, REASONS, Bounds
from gateway.runtime.pipeline import Item, Pipeline
from tests.garbage import GARBAGE
from tests.strategies_poison import EPOCH, NOW, broken, json_values, passes, payloads
from tests.unit.test_pipeline_frames import METERS, Spooled, validator

F = TypeVar("F", bound=Callable[..., Any])
OPTIONS = {"P-KES": PaygOptions("KES"), "P-JPY": PaygOptions("JPY"), "P-KSH": PaygOptions("KSH"),
           "P-VEN": PaygOptions("KES", currency_decimals={"KES": 3})}
MAX_FUTURE = timedelta(minutes=5)
#: Bounds a configuration can set (including none but the defaults).
bounds = st.builds(
    Bounds,
    money_max=st.sampled_from([Decimal(10) ** 9, Decimal(100), Decimal("0.5"), Decimal(10) ** 15]),
    money_max_by_currency=st.sampled_from([{}, {"JPY": Decimal(10) ** 12}]),
    extra_decimals=st.integers(0, 4),
    currencies=st.sampled_from([None, frozenset({"KES", "EUR"})]),
    ts_floor=st.sampled_from([datetime(2010, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC),
                              datetime(1, 1, 1, tzinfo=UTC)]),
    installed=st.sampled_from([{}, {"P-KES": NOW - timedelta(days=1)}]),
    max_ahead=st.sampled_from([timedelta(days=1), timedelta(seconds=60)]),
)
#: Plausible-looking messages too, so that many are accepted and the bounds' edges are reached.
near = st.fixed_dictionaries(
    {"ts": st.integers(EPOCH - 10**9, EPOCH + 600), "balance": st.decimals(allow_nan=False, allow_infinity=False,
                                                                         places=None).map(str)},
    optional={"currency": st.sampled_from(["KES", "JPY", "KWD", "XXX", "kes", "ZZZ", "KSH", "EUR"]),
              "debt": st.decimals(-10**10, 10**10, places=6).map(str),
              "emergency_credit": st.integers(-10**10, 10**10),
              "last_topup": st.fixed_dictionaries({"amount": st.decimals(0, 10**10, places=5).map(str),
                                                   "ts": st.integers(EPOCH - 10**9, EPOCH + 600)})},
).map(lambda doc: json.dumps(doc).encode())
anything = st.one_of(payloads, near, json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200))


def within(update: BalanceUpdate, b: Bounds, opts: PaygOptions, received: datetime) -> None:
    """Every bound of item 1 holds for an accepted update."""
    assert len(update.currency) == 3 and update.currency.isascii() and update.currency.isupper()
    assert update.currency == opts.currency or \
        update.currency in (MINOR_UNITS if b.currencies is None else b.currencies)
    allowed = allowed_decimals(update.currency, opts.currency_decimals)
    most = (NA_DECIMALS if allowed is None else allowed) + b.extra_decimals
    for amount in (update.balance, update.debt, update.emergency_credit, update.last_topup_amount):
        if amount is not None:
            assert abs(amount) <= b.money_max_by_currency.get(update.currency, b.money_max)
            assert decimals_of(amount) <= most
    assert b.ts_floor <= update.ts <= received + min(MAX_FUTURE, b.max_ahead)
    assert update.ts >= b.installed.get(update.meter_id, b.ts_floor)
    if update.last_topup_ts is not None:
        assert b.ts_floor <= update.last_topup_ts <= received + min(MAX_FUTURE, b.max_ahead)


def with_garbage(test: F) -> F:
    for g in GARBAGE:
        test = example(g.payload(EPOCH), "P-KES", Bounds())(test)
    return test


@settings(max_examples=400, deadline=None)
@given(anything, st.sampled_from([*OPTIONS, None]), bounds)
@with_garbage
def test_no_payload_raises_out_of_normalise_and_what_is_accepted_is_within_every_bound(
        payload: bytes, meter: str | None, b: Bounds) -> None:
    normaliser = Normaliser({}, OPTIONS, bounds=b)
    batch = normaliser.sample(RawPayload(f"payg/{meter}/balance", payload, NOW, meter))
    assert len(batch.balances) + len(batch.deadletters) == 1 and not batch.readings and not batch.events
    for update in batch.balances:
        assert meter is not None
        within(update, b, OPTIONS[meter], NOW)
    for dead in batch.deadletters:
        assert dead.reason in PAYLOAD_REASONS | REASONS | {"unknown_meter"}
        assert dead.detail.startswith(f"topic payg/{meter}/balance: ")
        assert len(dead.detail) < 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(passes(METERS), min_size=1, max_size=3))
def test_every_reading_of_any_words_is_within_its_channels_physical_range(rounds: list[list[RawRegisters]]) -> None:
    spool = Spooled()
    pipeline = Pipeline(Normaliser(METERS, {}), validator(), spool)

    async def feed() -> None:
        for polls in rounds:
            await pipeline.process(list[Item](p for p in polls if not broken(p)))

    asyncio.run(feed())
    for batch in spool.batches:
        for r in batch.readings:
            low, high = CHANNEL_LIMITS[r.channel]
            assert low <= r.value <= high, r
            assert r.ts >= Bounds().ts_floor, r  # a poll before the floor (a reset clock) is no data
        assert {d.reason for d in batch.deadletters} <= {"non_finite", "implausible_value", "not_available",
                                                         "missing_register", "implausible_ts"}


MAP = ObjectMap.from_dict({"name": "m", "objects": [
    {"code": "1-0:1.8.0", "channel": "energy_import", "unit": "kWh", "kind": "cumulative"},
    {"code": "1-0:32.7.0", "channel": "voltage_l1", "unit": "V"},
    {"code": "1-0:13.7.0", "channel": "power_factor", "unit": ""},
]})
values = st.one_of(st.floats(), st.decimals(), st.integers(), st.text(max_size=12), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1-0:1.8.0", "1-0:32.7.0", "1-0:13.7.0"]), values,
                          st.sampled_from([None, "kWh", "Wh", "V", "kV", ""])), max_size=6),
       st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), bounds)
def test_coded_values_never_raise_and_every_reading_is_within_its_bounds(
        coded: list[tuple[str, object, str | None]], ts: datetime, b: Bounds) -> None:
    normaliser = Normaliser({}, {}, objects={"E-1": (MAP, Source.P1)}, bounds=b)
    batch = normaliser.sample(RawObjects("E-1", ts.replace(tzinfo=UTC), NOW, tuple(coded)))  # type: ignore[arg-type]
    for r in batch.readings:
        low, high = b.channels.get(r.channel, (float("-inf"), float("inf")))
        assert low <= r.value <= high and b.floor("E-1") <= r.ts <= NOW + b.max_ahead
        assert r.channel in (Channel.ENERGY_IMPORT, Channel.VOLTAGE_L1, Channel.POWER_FACTOR)
