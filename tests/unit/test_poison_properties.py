"""Issue 22 item 1 as properties (hypothesis): whatever bytes arrive on a PAYG topic, and whatever
words a pass of Modbus polls holds, each becomes data or a dead letter the spool and the stores can
hold, and nothing raises. The poison payloads of tests/poison.py are explicit examples.

tests/storage/test_poison_path.py drives the same inputs on through the forwarder into both stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.samples import RawPayload, RawRegisters
from gateway.errors import PayloadError
from gateway.model import BalanceUpdate, Batch, DeadLetter, Source
from gateway.model.text import unstorable_at
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.payload import REASONS, parse_balance
from gateway.normalise.plausibility import Bounds
from gateway.runtime.pipeline import Item, Pipeline
from gateway.validate.payg import PaygChecker
from storage.spool import Spool
from storage.spool.codec import decode, encode
from tests.strategies_poison import KNOWN_POISON, NOW, broken, passes, payloads
from tests.unit.test_pipeline_frames import METERS, validator

F = TypeVar("F", bound=Callable[..., Any])
PAYG = {"P-0001": PaygOptions("KES"), "P-0002": PaygOptions("EUR", Decimal("2"))}
#: A meter's previous update, so that the checker computes differences with the new one.
BEFORE = BalanceUpdate("P-0001", NOW.replace(hour=11), Decimal("7.50"), "KES")


def storable_dead_letter(d: DeadLetter) -> bool:
    texts = (d.source, d.where, d.reason, d.detail, d.payload, d.meter_id or "")
    return all(unstorable_at(t) is None for t in texts)


def storable_amount(value: Decimal | None) -> bool:
    """PostgreSQL's numeric holds it exactly (SQLite keeps the text)."""
    if value is None:
        return True
    exponent = value.as_tuple().exponent
    return value.is_finite() and isinstance(exponent, int) and value.adjusted() < 131_072 and exponent >= -16_383


def with_poison(test: F) -> F:
    """Every poison payload of tests/poison.py, as an explicit example."""
    for payload in KNOWN_POISON:
        test = example(payload, "P-0001")(test)
    return test


@settings(max_examples=200, deadline=None)
@given(payloads, st.sampled_from(["P-0001", "P-0002", None]))
@with_poison
def test_any_payload_is_one_storable_balance_or_one_storable_dead_letter(payload: bytes, meter: str | None) -> None:
    topic = f"payg/{meter or 'P-9999'}/balance"
    try:
        parse_balance(payload, topic, meter or "P-9999", received_at=NOW)
    except PayloadError as exc:  # the parser's one error
        assert exc.reason in REASONS
    batch = Normaliser({}, PAYG).payload(RawPayload(topic, payload, NOW, meter))
    assert len(batch.balances) + len(batch.deadletters) == 1 and not batch.readings and not batch.events
    assert all(storable_dead_letter(d) for d in batch.deadletters)
    for b in batch.balances:
        assert unstorable_at(b.currency) is None
        assert all(storable_amount(v) for v in (b.balance, b.emergency_credit, b.debt, b.last_topup_amount))
    # The PAYG checker computes with whatever normalise lets through, against a previous update.
    checker = PaygChecker()
    checker.seed([BEFORE])
    batch.events = checker.check(batch.balances)
    assert all(unstorable_at(e.detail) is None for e in batch.events)
    assert decode(encode(batch)) == batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(passes(METERS), min_size=1, max_size=3))
async def test_any_words_in_passes_of_polls_end_as_readings_or_the_dead_letters_of_their_stage(
        tmp_path: Path, rounds: list[list[RawRegisters]]) -> None:
    async with Spool(tmp_path / f"spool-{uuid.uuid4().hex}.db", memory_bytes=0) as spool:
        pipeline = Pipeline(Normaliser(METERS, {}), validator(), spool)
        for polls in rounds:
            await pipeline.process(list[Item](polls))
        got = Batch()
        for _, batch in await spool.peek(1_000_000):  # read back from the file: decoded
            got.extend(batch)
    # Garbage words are the decoder's dead letters (non_finite, implausible_value, not_available, missing_register);
    # only a poll of words that are not 16 bits makes a stage raise, and only it is set aside. A poll stamped
    # before the floor (a gateway clock that reset) is one implausible_ts dead letter, whatever its words.
    floor = Bounds().ts_floor
    early = sorted((p.meter_id, p.received_at) for polls in rounds for p in polls if p.ts < floor)
    assert sorted((d.meter_id, d.ts) for d in got.deadletters if d.reason == "implausible_ts") == early
    set_aside = [(d.meter_id, d.ts) for d in got.deadletters if d.reason == "internal_error"]
    assert sorted(set_aside) == sorted((p.meter_id, p.received_at) for polls in rounds for p in polls
                                       if broken(p) and p.ts >= floor)
    assert {d.reason for d in got.deadletters} <= {"non_finite", "implausible_value", "not_available", "missing_register",
                                                        "internal_error", "implausible_ts"}
    kept = {(p.meter_id, p.ts) for polls in rounds for p in polls if not broken(p) and p.ts >= floor}
    assert {(r.meter_id, r.ts) for r in got.readings if r.source is Source.MODBUS} <= kept
    assert pipeline.counters.polls_ok == sum(map(len, rounds))
