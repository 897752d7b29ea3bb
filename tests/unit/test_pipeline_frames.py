"""The pipeline's columnar path (FrameDecoder -> Validator.validate_frame -> Reading objects) held
to the per-poll path it replaced (Normaliser.registers per poll, then Validator.validate), batch
by batch through two fresh validators: same readings, dead letters, events and counters.

Polls come from simulated meters of the shipped profiles, with the faults a field fleet sends:
garbage words (NaN and infinite floats, all-ones "not available" markers), huge values, tamper
bits, device clocks ahead or behind, regressions, missed and repeated polls, short reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.modbus.plan import plan_reads
from drivers.samples import PollFailure, RawPayload, RawRegisters, RegisterBlock
from gateway.config.profiles import load_profiles
from gateway.errors import DecodeError
from gateway.model import Batch, Channel, DeadLetter, Event, EventKind, Quality, Reading, Severity
from gateway.model.profiles import DeviceFlag, DeviceProfile, FlagSpec, Function
from gateway.normalise.frame import FrameDecoder, SeriesTable
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.units import conversion_factor
from gateway.runtime.pipeline import Item, Pipeline, PipelineCounters
from gateway.validate.validator import Validator
from simulators.modbus.meter import Fault, SimMeter

T0 = datetime(2026, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=15)
SHIPPED = load_profiles()
#: sdm120 with an active-low tamper bit in a register of its own: flags on a second profile.
SDM120_FLAGGED = dataclasses.replace(
    SHIPPED["sdm120"], name="sdm120_flagged",
    flags=(FlagSpec(DeviceFlag.TAMPER, Function.INPUT, 76, bit=3, active=False),))
PROFILES = [SHIPPED[n] for n in ("generic", "sdm630", "abb_b23", "em24", "sdm120")] + [SDM120_FLAGGED]
METERS = {f"{p.name}-{i}": p for p in PROFILES for i in (1, 2)}
UNKNOWN = "nobody-1"  # polled, but no profile is configured for it
#: Received minus measured: on time, device clock 2 min ahead (skew), 10 min ahead (future), 8 days late (stale).
LAGS = (timedelta(seconds=2), timedelta(seconds=-120), timedelta(seconds=-600), timedelta(days=8))
#: Words that decode to nothing storable or to something impossible, whatever the register type.
GARBAGE = (0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x7F7F, 0x8000, 0x0000)


@dataclass(frozen=True, slots=True)
class Tweak:
    """What goes wrong with one poll."""

    fault: Fault | None = None  # a SimMeter fault: garbage, regression, spike, tamper
    lag: timedelta = LAGS[0]
    word: tuple[int, int, int] | None = None  # (block, offset, value) written over the words read
    skip: bool = False  # the poll never arrives (a gap, then estimates)
    #: The poll arrives twice (a retry): "same" words, or its first word "changed" (a conflict).
    repeat: str | None = None
    short: bool = False  # the last block came back short (registers and flags not read)


def poll(meter: SimMeter, profile: DeviceProfile, ts: datetime, tweak: Tweak) -> list[RawRegisters]:
    """The RawRegisters a poller would emit for `meter` at `ts` (none, one, or a repeat)."""
    meter.fault = tweak.fault
    meter.tick(ts)
    if tweak.skip:
        return []
    image = {(fc, address + k): w for (fc, address), words in meter.encode(profile).items()
             for k, w in enumerate(words)}
    blocks = [[image.get((b.function.code, a), 0) for a in range(b.address, b.end)] for b in plan_reads(profile)]
    if tweak.word is not None:
        block, offset, value = tweak.word
        words = blocks[block % len(blocks)]
        words[offset % len(words)] = value
    if tweak.short:
        blocks[-1] = blocks[-1][:-2]
    read = tuple(RegisterBlock(b.function.code, b.address, tuple(w))
                 for b, w in zip(plan_reads(profile), blocks, strict=True))
    raw = RawRegisters(meter.meter_id, ts, ts + tweak.lag, read, 0.01)
    if tweak.repeat is None:
        return [raw]
    first = read[0]
    if tweak.repeat == "changed":
        first = RegisterBlock(first.function, first.address, (first.words[0] ^ 0x0001, *first.words[1:]))
    return [raw, dataclasses.replace(raw, blocks=(first, *read[1:]))]


def rounds(tweaks: list[dict[str, Tweak]], n: int) -> list[list[RawRegisters]]:
    """`n` 15-minute rounds over every meter (and one unknown meter); `tweaks[r][meter]` spoils a poll."""
    meters = {m: SimMeter(m, seed=7, start=T0 - STEP) for m in [*METERS, UNKNOWN]}
    out = []
    for r in range(n):
        ts = T0 + r * STEP
        got: list[RawRegisters] = []
        for meter_id, meter in meters.items():
            tweak = tweaks[r].get(meter_id, Tweak()) if r < len(tweaks) else Tweak()
            got += poll(meter, METERS.get(meter_id, SHIPPED["generic"]), ts, tweak)
        out.append(got)
    return out


def validator() -> Validator:
    """A fresh VEE configured as the gateway configures it (gateway.runtime.gateway._validator)."""
    moduli = {(m, r.channel): r.modulus * conversion_factor(r.unit, r.channel)
              for m, p in METERS.items() for r in p.registers if r.modulus}
    bidirectional = {m for m, p in METERS.items() if any(r.channel is Channel.ENERGY_EXPORT for r in p.registers)}
    return Validator(moduli, intervals=dict.fromkeys(METERS, 900.0), bidirectional=bidirectional)


class PerPoll:
    """The path the pipeline took before: one poll at a time through the Normaliser, then VEE on the list."""

    def __init__(self) -> None:
        self.normaliser = Normaliser(METERS, {})
        self.validator = validator()
        self.counters = PipelineCounters()

    def process(self, polls: list[RawRegisters]) -> Batch:
        batch = Batch()
        for raw in polls:
            batch.extend(self.normaliser.registers(raw))
        batch.readings, events = self.validator.validate(batch.readings)
        batch.events.extend(events)
        self._count(polls, batch)
        return batch

    def _count(self, polls: list[RawRegisters], batch: Batch) -> None:
        # The counting the pipeline did, reading by reading.
        c = self.counters
        c.batches += 1
        c.polls_ok += len(polls)
        c.readings += len(batch.readings)
        c.events += len(batch.events)
        c.deadletters += len(batch.deadletters)
        for r in batch.readings:
            for name in r.quality.names() or ["none"]:
                c.by_quality[name] += 1
        for d in batch.deadletters:
            c.deadletters_by_reason[d.reason] += 1
        for e in batch.events:
            c.events_by_kind[e.kind.value] += 1


class Spooled:
    """Spool stand-in: keeps what the pipeline commits."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def append(self, batch: Batch) -> int:
        self.batches.append(batch)
        return len(self.batches)


def row(r: Reading) -> tuple[Any, ...]:
    # Every field, `note` too (it is left out of Reading's ==), and the timestamps' zones.
    return (r.meter_id, r.channel, r.ts, r.ts.tzinfo, r.value, r.kind, r.quality, r.status, r.source, r.note,
            r.received_at)


def run_both(batches: list[list[RawRegisters]]) -> list[tuple[Batch, Batch]]:
    """Each batch through the old path and through `Pipeline.process`; returns (old, new) per batch,
    after checking the pipeline's counters and its on_batch calls."""
    old = PerPoll()
    spool = Spooled()
    observed: list[tuple[list[Item], Batch]] = []
    pipeline = Pipeline(Normaliser(METERS, {}), validator(), spool,
                        on_batch=lambda items, batch: observed.append((items, batch)))

    async def feed() -> None:
        for polls in batches:
            await pipeline.process(list[Item](polls))

    asyncio.run(feed())
    expected = [old.process(polls) for polls in batches]
    committed = [b for b in expected if len(b)]
    assert len(spool.batches) == len(committed)
    assert [b for _, b in observed if len(b)] == spool.batches
    assert [items for items, _ in observed] == batches
    assert pipeline.counters == old.counters
    return [(e, b) for e, (_, b) in zip(expected, observed, strict=True)]


def assert_same(pairs: list[tuple[Batch, Batch]]) -> None:
    for n, (old, new) in enumerate(pairs):
        assert [row(r) for r in new.readings] == [row(r) for r in old.readings], f"readings of batch {n}"
        assert new.deadletters == old.deadletters, f"dead letters of batch {n}"
        assert new.events == old.events, f"events of batch {n}"
        assert new.balances == old.balances == []


def cut(polls: list[list[RawRegisters]], sizes: list[int]) -> list[list[RawRegisters]]:
    """Rounds joined into pipeline batches of `sizes[i]` rounds each (a backlog: a meter twice in a batch)."""
    out, at, i = [], 0, 0
    while at < len(polls):
        take = sizes[i % len(sizes)]
        out.append([raw for rnd in polls[at:at + take] for raw in rnd])
        at, i = at + take, i + 1
    return out


def split(polls: list[list[RawRegisters]], sizes: list[int]) -> list[list[RawRegisters]]:
    """The polls of every round, in order, in pipeline batches of `sizes[i]` polls each: the small
    passes of a large fleet on a short interval, one poll alone included."""
    flat = [raw for rnd in polls for raw in rnd]
    out, at, i = [], 0, 0
    while at < len(flat):
        out.append(flat[at:at + sizes[i % len(sizes)]])
        at, i = at + sizes[i % len(sizes)], i + 1
    return out


# -- a fixed scenario: each fault named, and seen in the output --------------------------------

FIXED = [
    {},
    {"generic-1": Tweak(fault="tamper"), "sdm630-1": Tweak(word=(0, 0, 0x7FC0)),  # a NaN voltage
     "abb_b23-1": Tweak(fault="garbage"), "em24-1": Tweak(lag=LAGS[1]),
     "sdm120-1": Tweak(word=(0, 0, 0x7F7F)),  # 3.4e38 V: beyond any voltage, a dead letter
     "sdm120-2": Tweak(word=(0, 0, 0x4396))},  # about 300 V: a voltage, but out of range
    {"generic-1": Tweak(fault="tamper"), "generic-2": Tweak(skip=True), "sdm120_flagged-1": Tweak(fault="tamper"),
     "sdm630-2": Tweak(lag=LAGS[2]), "em24-2": Tweak(lag=LAGS[3]), "abb_b23-2": Tweak(fault="regression")},
    {"generic-1": Tweak(repeat="changed"), "generic-2": Tweak(repeat="same"), "sdm120-2": Tweak(short=True),
     "sdm630-1": Tweak(word=(1, 0, 0x7F80))},
    {"generic-2": Tweak(fault="tamper", short=True), "sdm120_flagged-1": Tweak(fault="tamper")},
    {"generic-1": Tweak(fault="tamper")},
]


@pytest.mark.parametrize("batches", [
    lambda polls: cut(polls, [1, 2, 3]),  # passes of one to three rounds
    lambda polls: split(polls, [1, 3, 1, 5, 2]),  # passes of a few polls: generic-1's tamper spans many
], ids=["rounds", "polls"])
def test_fixed_fleet_scenario_gives_the_same_batches_on_both_paths(
        batches: Callable[[list[list[RawRegisters]]], list[list[RawRegisters]]]) -> None:
    pairs = run_both(batches(rounds(FIXED, 8)))
    assert_same(pairs)
    new = Batch()
    for _, b in pairs:
        new.extend(b)
    # The scenario does what it says: every fault shows in what the pipeline committed.
    flags = Quality(0)
    for r in new.readings:
        flags |= r.quality
    for flag in (Quality.TAMPER, Quality.CLOCK_SKEW, Quality.FUTURE_TS, Quality.STALE_TS, Quality.OUT_OF_RANGE,
                 Quality.REGRESSION, Quality.GAP, Quality.ESTIMATED, Quality.DUPLICATE_CONFLICT):
        assert flags & flag, flag
    assert {d.reason for d in new.deadletters} >= {"non_finite", "implausible_value", "not_available",
                                                   "missing_register", "unknown_meter"}
    assert {e.kind for e in new.events} >= {EventKind.TAMPER, EventKind.ANOMALY}
    assert {r.meter_id.rsplit("-", 1)[0] for r in new.readings} == {p.name for p in PROFILES}
    # generic-2's short read misses its status word: no tamper seen. sdm120_flagged-1 is clear in
    # round 3 and tampered again in round 4, in the same batch: a second episode.
    tampered = [e.meter_id for e in new.events if e.kind is EventKind.TAMPER]
    assert tampered == ["generic-1", "sdm120_flagged-1", "sdm120_flagged-1", "generic-1"]


# -- any scenario (hypothesis) ----------------------------------------------------------------

tweaks = st.builds(
    Tweak,
    fault=st.sampled_from([None, None, None, "garbage", "regression", "spike", "tamper"]),
    lag=st.sampled_from(LAGS),
    word=st.none() | st.tuples(st.integers(0, 3), st.integers(0, 100), st.sampled_from(GARBAGE) | st.integers(0, 0xFFFF)),
    skip=st.booleans(), repeat=st.sampled_from([None, None, "same", "changed"]), short=st.booleans(),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from([*METERS, UNKNOWN]), tweaks, max_size=6), min_size=1, max_size=6),
       st.lists(st.integers(1, 3), min_size=1, max_size=4), st.randoms(use_true_random=False), st.booleans())
def test_any_fleet_scenario_gives_the_same_batches_on_both_paths(
        spoiled: list[dict[str, Tweak]], sizes: list[int], rng: Any, by_poll: bool) -> None:
    polls = rounds(spoiled, len(spoiled) + 2)
    for rnd in polls:
        rng.shuffle(rnd)  # polls of a round arrive in any order
    # Passes of whole rounds, or of one to three polls (a tamper episode then spans passes).
    assert_same(run_both(split(polls, sizes) if by_poll else cut(polls, sizes)))


# -- the items that keep their own path ---------------------------------------------------------

def test_payloads_failures_events_and_dead_letters_pass_beside_the_polls() -> None:
    spool = Spooled()
    acked: list[str] = []

    def ack(name: str) -> Callable[[], None]:
        def done() -> None:
            assert spool.batches, "acked before the spool commit"
            acked.append(name)
        return done

    pipeline = Pipeline(Normaliser(METERS, {"payg-1": PaygOptions("EUR", Decimal("5"))}), validator(), spool)
    polls = rounds([{"sdm630-1": Tweak(word=(0, 0, 0x7FC0))}], 1)[0]
    topic = "meters/payg-1/balance"
    payload = RawPayload(topic, b'{"ts": "2026-03-02T00:00:00Z", "balance": 12.50, "currency": "EUR"}', T0,
                         "payg-1", ack("good"))
    bad = RawPayload(topic, b"not json", T0, "payg-1", ack("bad"))
    driver_event = Event(T0, "generic-1", EventKind.COMM_RESTORED, Severity.INFO, "back")
    driver_dead = DeadLetter(T0, "modbus", "generic-1", "decode", "bad frame", "[]", "generic-1")
    failure = PollFailure("em24-1", T0, DecodeError("em24-1", "em24-1", 0x10, (1, 2), "garbled"))
    items: list[Item] = [payload, *polls[:3], driver_event, failure, *polls[3:], driver_dead, bad]
    asyncio.run(pipeline.process(items))

    (batch,) = spool.batches
    expected = PerPoll().process(polls)
    assert [row(r) for r in batch.readings] == [row(r) for r in expected.readings]
    assert [(b.meter_id, b.balance) for b in batch.balances] == [("payg-1", Decimal("12.50"))]
    # The other items' output comes first, in arrival order; then what the polls gave.
    assert batch.events == [driver_event, *expected.events]
    assert [(d.source, d.reason) for d in batch.deadletters[:3]] == \
        [("modbus", "decode"), ("modbus", "decode"), ("mqtt", "malformed_json")]
    assert batch.deadletters[1] is driver_dead and batch.deadletters[3:] == expected.deadletters
    assert {d.reason for d in expected.deadletters} == {"non_finite", "unknown_meter"}
    assert acked == ["good", "bad"]
    c = pipeline.counters
    assert (c.polls_ok, c.polls_failed, c.payloads, c.balances, c.batches) == (len(polls), 1, 2, 1, 1)
    assert (c.readings, c.events, c.deadletters) == (len(batch.readings), len(batch.events), len(batch.deadletters))
    assert c.by_quality == expected_counts(expected.readings)


def expected_counts(readings: list[Reading]) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in readings:
        out.update(r.quality.names() or ["none"])
    return out


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_every_profile_alone_gives_the_same_batches(profile: DeviceProfile) -> None:
    # One profile per batch takes the decoder's single-profile shortcut.
    polls = [[raw for raw in rnd if raw.meter_id.startswith(f"{profile.name}-")] for rnd in rounds(FIXED, 6)]
    assert_same(run_both(polls))


def test_a_tamper_episode_raises_one_event_as_the_normaliser_raises_it() -> None:
    # Passes of one poll each (the smallest frames): the decoder remembers an episode from pass
    # to pass, raising its event when it starts and again only after it has ended.
    spoiled = [{}, {"generic-1": Tweak(fault="tamper")}, {"generic-1": Tweak(fault="tamper")}, {},
               {"generic-1": Tweak(fault="tamper")}, {"generic-1": Tweak(fault="tamper")}]
    polls = [[raw for raw in rnd if raw.meter_id == "generic-1"] for rnd in rounds(spoiled, len(spoiled))]
    decoder = FrameDecoder(METERS, SeriesTable())
    reference = Normaliser(METERS, {})
    raised = []
    for n, rnd in enumerate(polls):
        expected = [e for raw in rnd for e in reference.registers(raw).events]
        got = decoder.decode(rnd)[2]
        assert got == expected, f"round {n}"
        raised += [n for e in got if e.kind is EventKind.TAMPER]
    assert raised == [1, 4]  # two episodes, one event each
