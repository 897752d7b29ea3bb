"""Issue 22 item 1, stage by stage: no payload and no poll makes a stage raise anything but its own
error; what a stage does not foresee still ends as a dead letter, and the rest of the batch goes on.

The poison payloads are in tests/poison.py; each made the gateway exit before this issue (or would
have, a little later), and each must now be a dead letter with its reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.mqtt.commands import parse_reply
from drivers.samples import RawPayload, RawRegisters, RegisterBlock
from gateway.errors import PayloadError
from gateway.model import BalanceUpdate, Batch, Channel, DeadLetter, Event, EventKind, Severity
from gateway.model.text import unstorable_at
from gateway.normalise.frame import ReadingFrame
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.payload import REASONS, parse_balance
from gateway.normalise.units import conversion_factor
from gateway.runtime.pipeline import Item, Pipeline
from gateway.validate.payg import PaygChecker
from gateway.validate.validator import Validator
from storage.spool import Spool
from storage.spool.codec import decode, encode
from tests.poison import POISON, Poison
from tests.unit.test_pipeline_frames import METERS, rounds, validator

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())
TOPIC = "payg/P-0001/balance"


def good(balance: str, minutes_ago: int) -> bytes:
    return f'{{"ts": {EPOCH - 60 * minutes_ago}, "balance": {balance}, "currency": "KES"}}'.encode()


def storable(dead: DeadLetter) -> bool:
    return all(unstorable_at(text) is None for text in (dead.source, dead.where, dead.reason, dead.detail,
                                                        dead.payload, dead.meter_id or ""))


# -- the payload parser and the normaliser --------------------------------------------------------

@pytest.mark.parametrize("poison", POISON, ids=lambda p: p.name)
def test_the_parser_refuses_each_poison_payload_with_its_reason(poison: Poison) -> None:
    with pytest.raises(PayloadError) as info:
        parse_balance(poison.payload(EPOCH), TOPIC, "P-0001", received_at=NOW)
    assert info.value.reason == poison.reason and poison.reason in REASONS
    assert poison.says in str(info.value)


@pytest.mark.parametrize(("inside", "outside"), [("9.9e131071", "1e131072"), ("-9.9e131071", "-1e131072"),
                                                  ("1e-16383", "1e-16384"), ("0." + "0" * 16382 + "1", "1.0e-16383")])
def test_amounts_are_refused_just_past_what_postgresql_numeric_holds_exactly(inside: str, outside: str) -> None:
    # A limit of representation (the stores hold `inside`: tests/storage/test_poison_path.py), not of plausibility.
    def parse(amount: str) -> BalanceUpdate:
        payload = f'{{"ts": {EPOCH}, "balance": 1, "debt": {amount}}}'.encode()
        return parse_balance(payload, TOPIC, "P-0001", received_at=NOW, max_bytes=65536)

    assert parse(inside).debt == Decimal(inside)
    with pytest.raises(PayloadError) as info:
        parse(outside)
    assert info.value.reason == "bad_number" and "field 'debt'" in str(info.value)


@pytest.mark.parametrize("poison", POISON, ids=lambda p: p.name)
def test_the_normaliser_makes_each_poison_payload_a_dead_letter_the_spool_can_hold(poison: Poison) -> None:
    normaliser = Normaliser({}, {"P-0001": PaygOptions("KES")})
    batch = normaliser.payload(RawPayload(TOPIC, poison.payload(EPOCH), NOW, "P-0001"))
    assert batch.balances == []
    (dead,) = batch.deadletters
    assert (dead.source, dead.where, dead.reason, dead.meter_id, dead.ts) == \
        ("mqtt", TOPIC, poison.reason, "P-0001", NOW)
    assert poison.says in dead.detail and storable(dead)
    assert decode(encode(batch)) == batch


def test_a_dead_letter_keeps_text_no_store_can_hold_as_its_escape() -> None:
    # A raw NUL byte is valid UTF-8 (and not JSON): the dead letter keeps the payload, escaped.
    normaliser = Normaliser({}, {"P-0001": PaygOptions("KES")})
    (dead,) = normaliser.payload(RawPayload(TOPIC, b'{"balance": 1, "currency": "K\x00ES"}', NOW, "P-0001")).deadletters
    assert dead.reason == "malformed_json"
    assert dead.payload == '{"balance": 1, "currency": "K\\u0000ES"}'
    made = DeadLetter(NOW, "mqtt", "t\x00", "r", "lone \udc80", "p", "M\x00")
    assert (made.where, made.detail, made.meter_id) == ("t\\u0000", "lone \\udc80", "M\\u0000")


# -- the PAYG checker ----------------------------------------------------------------------------

def update(balance: str, minute: int, meter_id: str = "P-0001") -> BalanceUpdate:
    value = Decimal(balance)
    return BalanceUpdate(meter_id, NOW + timedelta(minutes=minute), value, "KES", low_credit=value <= 5,
                         credit_exhausted=value <= 0, received_at=NOW + timedelta(minutes=minute))


def test_the_payg_checker_computes_with_any_balance_a_meter_can_send() -> None:
    # Each step's difference overflowed the default decimal context (decimal.Overflow).
    checker = PaygChecker()
    steps = ["5", "1e1000000", "-1e1000000", "9e999999999999999999", "-9e999999999999999999"]
    kinds = [[e.kind for e in checker.check([update(b, 10 * i)])] for i, b in enumerate(steps)]
    assert kinds == [[EventKind.LOW_CREDIT], [EventKind.TOPUP], [EventKind.CREDIT_EXHAUSTED], [EventKind.TOPUP],
                     [EventKind.CREDIT_EXHAUSTED]]
    last = checker.last("P-0001")
    assert last is not None and last.balance == Decimal("-9e999999999999999999")


def test_an_update_the_checker_fails_on_leaves_its_meter_as_it_was_and_the_others_are_checked() -> None:
    checker = PaygChecker()
    checker.check([update("10", 0)])
    # Not a Decimal: a bug upstream, the kind of failure nobody foresaw.
    broken = dataclasses.replace(update("8", 10), balance="8")  # type: ignore[arg-type]
    failed: list[tuple[BalanceUpdate, type[Exception]]] = []
    events = checker.check([broken, update("3", 10, "P-0002"), update("4", 20)],
                           on_error=lambda u, exc: failed.append((u, type(exc))))
    assert failed == [(broken, TypeError)]
    assert [(e.meter_id, e.kind) for e in events] == \
        [("P-0001", EventKind.LOW_CREDIT), ("P-0002", EventKind.LOW_CREDIT)]
    with pytest.raises(TypeError):
        checker.check([dataclasses.replace(broken, ts=NOW + timedelta(minutes=30))])
    last = checker.last("P-0001")
    assert last is not None and last.balance == Decimal("4")


# -- the spool's encoder, command replies ----------------------------------------------------------

def test_the_spool_encoder_takes_text_no_store_can_hold_and_gives_it_back() -> None:
    batch = Batch(balances=[dataclasses.replace(update("1", 0), currency="\ud800")],
                  events=[Event(NOW, "P-0001", EventKind.COMMAND, Severity.INFO, "reply \udfff and \x00")])
    assert decode(encode(batch)) == batch


def test_a_command_reply_is_refused_if_a_store_cannot_look_its_correlation_id_up() -> None:
    topic = "payg/P-0001/command/reply"
    for cid in ("gw.\\u0000", "gw.\\ud800"):
        with pytest.raises(PayloadError) as info:
            parse_reply(topic, f'{{"correlation_id": "{cid}", "status": "ok"}}'.encode(), None)
        assert info.value.reason == "bad_text"
    with pytest.raises(PayloadError) as info:
        parse_reply(topic, b'{"status": "ok"}', b"gw.\x00")  # MQTT 5 correlation data
    assert info.value.reason == "bad_text"
    # The free-text detail is kept, escaped: it is persisted with the command.
    assert parse_reply(topic, b'{"correlation_id": "gw.1", "status": "ok", "detail": "x\\ud800\\u0000"}', None) == \
        ("gw.1", parse_reply(topic, b'{"correlation_id": "gw.1", "status": "ok"}', None)[1], "x\\ud800\\u0000")


# -- the pipeline: the boundary of each message and each poll -------------------------------------

class Acks:
    def __init__(self) -> None:
        self.done: list[str] = []

    def __call__(self, name: str) -> Callable[[], None]:
        return lambda: self.done.append(name)


async def spooled(spool: Spool) -> Batch:
    """Everything in the spool, read back from its file (the spool keeps no batch in memory)."""
    out = Batch()
    for _, batch in await spool.peek(1_000_000):
        out.extend(batch)
    return out


def payg_pipeline(spool: Spool, *, normaliser: Normaliser | None = None, payg: PaygChecker | None = None,
                  on_batch: Callable[[list[Item], Batch], None] | None = None) -> Pipeline:
    meters = {m: PaygOptions("KES") for m in ("P-0001", "P-0002")}
    return Pipeline(normaliser or Normaliser({}, meters), Validator(), spool, payg=payg or PaygChecker(),
                    on_batch=on_batch)


async def test_each_poison_payload_is_a_dead_letter_and_the_messages_around_it_are_stored(tmp_path: Path) -> None:
    acks = Acks()
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = payg_pipeline(spool)
        first = RawPayload(TOPIC, good("10", 20), NOW, "P-0001", acks("first"))
        burst: list[Item] = [first, *(RawPayload(TOPIC, p.payload(EPOCH), NOW, "P-0001", acks(p.name)) for p in POISON),
                             RawPayload(TOPIC, good("9", 10), NOW, "P-0001", acks("second"))]
        await pipeline.process(burst)
        # And each alone, after the meter has a state for the checker to compute against.
        for p in POISON:
            await pipeline.process([RawPayload(TOPIC, p.payload(EPOCH), NOW, "P-0001", acks(p.name))])
        await pipeline.process([RawPayload(TOPIC, good("8", 5), NOW, "P-0001", acks("third"))])
        got = await spooled(spool)
    names = [p.name for p in POISON]
    assert acks.done == ["first", *names, "second", *names, "third"]
    assert [d.reason for d in got.deadletters] == [p.reason for p in POISON] * 2
    assert all(storable(d) for d in got.deadletters)
    assert [b.balance for b in got.balances] == [Decimal("10"), Decimal("9"), Decimal("8")]


class Buggy(Normaliser):
    """A normaliser with a bug that one payload triggers."""

    def payload(self, raw: RawPayload) -> Batch:
        if raw.payload.startswith(b"boom"):
            msg = "a bug nobody foresaw"
            raise RuntimeError(msg)
        return super().payload(raw)


async def test_a_message_a_stage_raises_on_is_a_dead_letter_and_acknowledged(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    acks = Acks()
    normaliser = Buggy({}, {"P-0001": PaygOptions("KES")})
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = payg_pipeline(spool, normaliser=normaliser)
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.boundary"):
            await pipeline.process([RawPayload(TOPIC, good("10", 10), NOW, "P-0001", acks("good")),
                                    RawPayload(TOPIC, b"boom \x00 1", NOW, "P-0001", acks("boom")),
                                    RawPayload(TOPIC, b"boom 2", NOW, "P-0001", acks("boom again")),
                                    RawPayload(TOPIC, good("9", 5), NOW, "P-0001", acks("good again"))])
        got = await spooled(spool)
    assert acks.done == ["good", "boom", "boom again", "good again"]
    assert [b.balance for b in got.balances] == [Decimal("10"), Decimal("9")]
    first, second = got.deadletters
    assert (first.reason, first.source, first.where, first.meter_id, first.ts) == \
        ("internal_error", "mqtt", TOPIC, "P-0001", NOW)
    assert first.detail == "normalise raised RuntimeError: a bug nobody foresaw"
    assert (first.payload, second.payload) == ("boom \\u0000 1", "boom 2")
    assert pipeline.counters.deadletters_by_reason == {"internal_error": 2}
    # Logged at error level each time, with the traceback the first time only.
    records = [r for r in caplog.records if r.name == "gateway.runtime.boundary"]
    assert [r.levelno for r in records] == [logging.ERROR] * 2
    assert records[0].exc_info is not None and records[1].exc_info is None


class Picky(PaygChecker):
    """A PAYG checker with a rule that fails on one balance."""

    def _transition(self, state: Any, u: BalanceUpdate) -> list[Event]:
        if u.balance == Decimal("13.13"):
            msg = "a rule that fails"
            raise ArithmeticError(msg)
        return super()._transition(state, u)


async def test_a_message_the_payg_checker_fails_on_is_a_dead_letter_and_not_stored(tmp_path: Path) -> None:
    acks = Acks()
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = payg_pipeline(spool, payg=Picky())
        await pipeline.process([RawPayload(TOPIC, good("10", 20), NOW, "P-0001", acks("10"))])
        await pipeline.process([RawPayload(TOPIC, good("13.13", 10), NOW, "P-0001", acks("13.13")),
                                RawPayload("payg/P-0002/balance", good("4", 10), NOW, "P-0002", acks("4")),
                                RawPayload(TOPIC, good("3", 5), NOW, "P-0001", acks("3"))])
        got = await spooled(spool)
    assert acks.done == ["10", "13.13", "4", "3"]
    assert [(b.meter_id, b.balance) for b in got.balances] == \
        [("P-0001", Decimal("10")), ("P-0002", Decimal("4")), ("P-0001", Decimal("3"))]
    (dead,) = got.deadletters
    assert (dead.reason, dead.where) == ("internal_error", TOPIC)
    assert dead.detail == "validate raised ArithmeticError: a rule that fails"
    assert dead.payload == good("13.13", 10).decode()
    assert sorted((e.meter_id, e.kind.value) for e in got.events) == \
        [("P-0001", "low_credit"), ("P-0002", "low_credit")]


class Unsorted(PaygChecker):
    """A PAYG checker that fails on a batch as a whole (its updates would not sort, say)."""

    def check(self, updates: Sequence[BalanceUpdate],
              on_error: Callable[[BalanceUpdate, Exception], None] | None = None) -> list[Event]:
        if len(updates) > 1:
            msg = "cannot order these updates"
            raise TypeError(msg)
        return super().check(updates, on_error)


async def test_when_the_payg_checker_fails_on_a_whole_batch_each_update_is_checked_alone(tmp_path: Path) -> None:
    acks = Acks()
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = payg_pipeline(spool, payg=Unsorted())
        await pipeline.process([RawPayload(TOPIC, good("4", 10), NOW, "P-0001", acks("4")),
                                RawPayload("payg/P-0002/balance", good("3", 10), NOW, "P-0002", acks("3"))])
        got = await spooled(spool)
    assert acks.done == ["4", "3"] and got.deadletters == []
    assert [b.balance for b in got.balances] == [Decimal("4"), Decimal("3")]
    assert sorted((e.meter_id, e.kind.value) for e in got.events) == \
        [("P-0001", "low_credit"), ("P-0002", "low_credit")]


class Fussy(Validator):
    """VEE with a check that fails on one meter's rows."""

    def validate_frame(self, frame: ReadingFrame, *, ordered: bool = False) -> tuple[ReadingFrame, list[Event]]:
        if any(self.series.keys[s][0] == "sdm630-2" for s in frame.series.tolist()):
            msg = "a check that fails"
            raise FloatingPointError(msg)
        return super().validate_frame(frame, ordered=ordered)


def fussy() -> Fussy:
    """Configured as tests.unit.test_pipeline_frames.validator() configures VEE."""
    moduli = {(m, r.channel): r.modulus * conversion_factor(r.unit, r.channel)
              for m, p in METERS.items() for r in p.registers if r.modulus}
    bidirectional = {m for m, p in METERS.items() if any(r.channel is Channel.ENERGY_EXPORT for r in p.registers)}
    return Fussy(moduli, intervals=dict.fromkeys(METERS, 900.0), bidirectional=bidirectional)


def not_a_word(raw: RawRegisters) -> RawRegisters:
    """The poll with a word no register holds (70000 is not 16 bits): a driver bug."""
    first = raw.blocks[0]
    return dataclasses.replace(raw, blocks=(RegisterBlock(first.function, first.address, (70000, *first.words[1:])),
                                            *raw.blocks[1:]))


@pytest.mark.parametrize("fault", ["decode", "validate"])
async def test_a_poll_that_breaks_its_pass_is_a_dead_letter_and_the_rest_of_the_pass_is_stored(
        tmp_path: Path, fault: str) -> None:
    polls = rounds([{}], 1)[0]
    bad = next(i for i, p in enumerate(polls) if p.meter_id == "sdm630-2")
    if fault == "decode":
        polls[bad] = not_a_word(polls[bad])
    others = polls[:bad] + polls[bad + 1:]
    v = fussy() if fault == "validate" else validator()
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = Pipeline(Normaliser(METERS, {}), v, spool)
        await pipeline.process(list[Item](polls))
        got = await spooled(spool)
    async with Spool(tmp_path / "reference.db", memory_bytes=0) as spool:
        await Pipeline(Normaliser(METERS, {}), validator(), spool).process(list[Item](others))
        expected = await spooled(spool)
    key = sorted((r.meter_id, r.channel, r.value, r.quality) for r in got.readings)
    assert key == sorted((r.meter_id, r.channel, r.value, r.quality) for r in expected.readings)
    assert all(r.meter_id != "sdm630-2" for r in got.readings)
    dead = [d for d in got.deadletters if d.reason == "internal_error"]
    assert [(d.source, d.where, d.meter_id) for d in dead] == [("modbus", "sdm630-2", "sdm630-2")]
    raised = "OverflowError" if fault == "decode" else "FloatingPointError: a check that fails"
    assert dead[0].detail.startswith(f"decode raised {raised}")
    assert dead[0].payload.startswith(f"{polls[bad].blocks[0].function}/{polls[bad].blocks[0].address}:[")
    assert sorted(got.deadletters, key=repr) == sorted([*expected.deadletters, *dead], key=repr)


async def test_an_observer_that_fails_does_not_stop_the_pipeline(tmp_path: Path) -> None:
    def broken(items: list[Item], batch: Batch) -> None:
        raise ZeroDivisionError

    acks = Acks()
    async with Spool(tmp_path / "spool.db", memory_bytes=0) as spool:
        pipeline = payg_pipeline(spool, on_batch=broken)
        await pipeline.process([RawPayload(TOPIC, good("10", 10), NOW, "P-0001", acks("good"))])
        got = await spooled(spool)
    assert acks.done == ["good"] and [b.balance for b in got.balances] == [Decimal("10")]
