"""Issue 19 item 1: plausibility bounds at normalise, per field and per channel. Each garbage kind
(tests/garbage.py) is a dead letter whose detail names the field, the value (shortened) and the
bound; the edges of every bound are accepted; each bound follows its configuration."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from drivers.modbus.plan import plan_reads
from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel, Source
from gateway.model.profiles import ObjectMap
from gateway.model.samples import RawObjects, RawPayload, RawRegisters, RegisterBlock
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.plausibility import Bounds
from gateway.runtime.pipeline import Pipeline
from gateway.validate.validator import Validator
from tests.garbage import GARBAGE, Garbage
from tests.unit.test_pipeline_frames import Spooled

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())
TOPIC = "payg/G-1/balance"


def send(payload: bytes | str, normaliser: Normaliser | None = None, meter: str | None = "G-1") -> tuple[str, str]:
    """(reason, detail) of the message's dead letter, or ("stored", balance)."""
    normaliser = normaliser or Normaliser({}, {"G-1": PaygOptions("KES")})
    raw = RawPayload(TOPIC, payload.encode() if isinstance(payload, str) else payload, NOW, meter)
    batch = normaliser.payload(raw)
    if batch.balances:
        return "stored", str(batch.balances[0].balance)
    [dead] = batch.deadletters
    return dead.reason, dead.detail


@pytest.mark.parametrize("kind", GARBAGE, ids=[g.name for g in GARBAGE])
def test_each_kind_of_garbage_is_a_dead_letter_with_its_reason(kind: Garbage) -> None:
    reason, detail = send(kind.payload(EPOCH), meter=None if kind.unknown_meter else "G-1")
    assert reason == kind.reason
    assert kind.says in detail
    assert detail.startswith(f"topic {TOPIC}: ")
    assert len(detail) < 400  # the value is shortened, whatever its size


@pytest.fixture
def deep_recursion() -> Iterator[None]:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    yield
    sys.setrecursionlimit(before)


@pytest.mark.usefixtures("deep_recursion")
def test_deep_nesting_is_refused_whatever_the_recursion_limit() -> None:
    # The JSON decoder's own limit is the interpreter's, which anything in the process may raise.
    assert send(f'{{"ts": {EPOCH}, "balance": {"[" * 3000}1{"]" * 3000}}}') == (
        "malformed_json", f"topic {TOPIC}: payload nests too deeply")


@pytest.mark.parametrize("payload", [
    '{"ts": {now}, "balance": 1000000000, "debt": -1000000000, "emergency_credit": "999999999.9999"}',
    '{"ts": {now}, "balance": "12.3456"}',  # KES: 2 decimals + 2
    '{"ts": {now}, "balance": 5, "currency": "JPY", "last_topup": {"amount": "100.01", "ts": {now}}}',
    '{"ts": {now}, "balance": 5, "currency": "KWD", "debt": "0.12345"}',  # KWD: 3 decimals + 2
    '{"ts": {now}, "balance": 5, "currency": "XXX", "debt": "0.123456"}',  # no minor unit: 4 + 2
    '{"ts": {now}, "balance": 5, "currency": " usd "}',
    '{"ts": "2010-01-01T00:00:00Z", "balance": 1}',  # the floor itself
    '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, "ts": "2010-01-01T00:00:00Z"}}',
    '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, "ts": {soon}}}',  # within max_future
    "12.50",
])
def test_the_edges_of_every_bound_are_data(payload: str) -> None:
    text = payload.replace("{now}", str(EPOCH)).replace("{soon}", str(EPOCH + 299))
    assert send(text)[0] == "stored"


def test_each_bound_follows_its_configuration() -> None:
    bounds = Bounds(money_max=Decimal(100), money_max_by_currency={"IRR": Decimal(10) ** 12}, extra_decimals=0,
                    currencies=frozenset({"KES", "IRR"}), ts_floor=datetime(2020, 1, 1, tzinfo=UTC),
                    installed={"G-1": datetime(2025, 6, 1, tzinfo=UTC)})
    normaliser = Normaliser({}, {"G-1": PaygOptions("KES", currency_decimals={"KES": 3}),
                                 "G-2": PaygOptions("KSH")}, bounds=bounds)
    at = f'"ts": {EPOCH}'
    assert send(f'{{{at}, "balance": 99.001}}', normaliser) == ("stored", "99.001")  # [mqtt] currency_decimals
    assert send(f'{{{at}, "balance": 99.0001}}', normaliser)[0] == "implausible_decimals"
    assert send(f'{{{at}, "balance": 101}}', normaliser) == (
        "implausible_amount", f"topic {TOPIC}: field 'balance' 101 KES is beyond ±100 KES ([plausibility] money_max)")
    assert send(f'{{{at}, "balance": 5e11, "currency": "IRR"}}', normaliser)[0] == "stored"
    assert send(f'{{{at}, "balance": 5, "currency": "EUR"}}', normaliser) == (
        "bad_currency", f"topic {TOPIC}: field 'currency' 'EUR' is not one of [plausibility] currencies")
    assert send('{"ts": "2025-05-31T00:00:00Z", "balance": 5}', normaliser) == (
        "implausible_ts", f"topic {TOPIC}: field 'ts' 2025-05-31T00:00:00+00:00 is before 2025-06-01T00:00:00+00:00 "
                          "(the meter's installed_at)")
    # A meter's configured currency is always allowed, ISO 4217 or not.
    raw = RawPayload("payg/G-2/balance", b"7", NOW, "G-2")
    assert [(b.balance, b.currency) for b in normaliser.payload(raw).balances] == [(Decimal(7), "KSH")]


@pytest.mark.parametrize(("changes", "says"), [
    ({"money_max": Decimal(0)}, "money_max must be > 0"),
    ({"extra_decimals": -1}, "extra_decimals must be >= 0, got -1"),
    ({"ts_floor": datetime(2020, 1, 1)}, "ts_floor needs a time zone"),
    ({"channels": {Channel.POWER: (5.0, 1.0)}}, "channels.power: low 5.0 is above high 1.0"),
    ({"max_ahead": timedelta(0)}, "max_ahead must be > 0, got 0:00:00"),
])
def test_bounds_that_make_no_sense_are_refused(changes: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Bounds(**changes)  # type: ignore[arg-type]


MAP = ObjectMap.from_dict({"name": "m", "objects": [
    {"code": "1-0:1.8.0", "channel": "energy_import", "unit": "kWh", "kind": "cumulative"},
    {"code": "1-0:32.7.0", "channel": "voltage_l1", "unit": "V"},
]})


def test_coded_values_outside_their_channels_physical_range_or_before_the_floor_are_dead_letters() -> None:
    normaliser = Normaliser({}, {}, objects={"E-1": (MAP, Source.P1)},
                            bounds=Bounds(channels={Channel.VOLTAGE_L1: (0.0, 1000.0)}))
    batch = normaliser.sample(RawObjects("E-1", NOW, NOW, (("1-0:1.8.0", "1e15", "kWh"), ("1-0:32.7.0", 2300, "V"))))
    assert [(r.channel, r.value) for r in batch.readings] == [(Channel.ENERGY_IMPORT, 1e15)]  # no limit configured
    [dead] = batch.deadletters
    assert (dead.reason, dead.meter_id, dead.source) == ("implausible_value", "E-1", "p1")
    assert dead.detail == ("2300 V is outside the physical range of voltage_l1, 0..1000 V "
                           "([plausibility.channels] voltage_l1)")
    old = NOW.replace(year=2001)
    batch = normaliser.sample(RawObjects("E-1", old, NOW, (("1-0:32.7.0", 230, "V"),)))
    assert batch.readings == [] and [d.reason for d in batch.deadletters] == ["implausible_ts"]
    assert "voltage_l1: ts 2001-03-02T12:00:00+00:00 is before 2010-01-01" in batch.deadletters[0].detail
    assert batch.deadletters[0].ts == NOW  # stamped with its receipt


def test_a_time_a_meter_stamps_beyond_max_ahead_is_implausible_for_every_kind() -> None:
    # Coded values (the meter's clock): a little ahead is VEE's future_ts flag, beyond max_ahead no data.
    normaliser = Normaliser({}, {"G-1": PaygOptions("KES")}, objects={"E-1": (MAP, Source.P1)},
                            bounds=Bounds(max_ahead=timedelta(hours=1)))
    soon, far = NOW + timedelta(minutes=59), NOW + timedelta(hours=1, seconds=1)
    batch = normaliser.sample(RawObjects("E-1", soon, NOW, (("1-0:32.7.0", 230, "V"),)))
    assert [r.ts for r in batch.readings] == [soon] and batch.deadletters == []
    batch = normaliser.sample(RawObjects("E-1", far, NOW, (("1-0:32.7.0", 230, "V"),)))
    assert batch.readings == [] and [(d.reason, d.detail) for d in batch.deadletters] == [(
        "implausible_ts", "voltage_l1: ts 2026-03-02T13:00:01+00:00 is more than 3600 s after receipt "
                          "(2026-03-02T12:00:00+00:00) ([plausibility] max_ahead)")]
    # Balances: the same rule, before the payload format's tighter max_future (future_ts).
    assert send(f'{{"ts": {EPOCH + 3601}, "balance": 1}}', normaliser) == (
        "implausible_ts", f"topic {TOPIC}: field 'ts' 2026-03-02T13:00:01+00:00 is more than 3600 s after receipt "
                          "(2026-03-02T12:00:00+00:00) ([plausibility] max_ahead)")
    assert send(f'{{"ts": {EPOCH + 3600}, "balance": 1}}', normaliser)[0] == "future_ts"
    topup = f'{{"ts": {EPOCH}, "balance": 1, "last_topup": {{"amount": 5, "ts": {EPOCH + 3601}}}}}'
    assert send(topup, normaliser)[1].endswith("([plausibility] max_ahead)")


def test_a_poll_before_the_meters_installation_is_one_dead_letter_and_no_reading() -> None:
    # Polls carry the gateway's clock: never ahead, but a meter polled before its installation (or a
    # gateway clock that reset to 1970) measured nothing that is data.
    profile = load_profiles()["generic"]
    blocks = tuple(RegisterBlock(b.function.code, b.address, (0,) * (b.end - b.address)) for b in plan_reads(profile))
    installed = NOW + timedelta(days=1)
    normaliser = Normaliser({"M-1": profile}, {}, bounds=Bounds(installed={"M-1": installed}))
    early = RawRegisters("M-1", NOW, NOW, blocks, 0.01)
    for batch in (normaliser.registers(early), pipelined(normaliser, early)):
        assert batch.readings == [] and [(d.reason, d.detail, d.ts) for d in batch.deadletters] == [(
            "implausible_ts", f"poll: ts {NOW.isoformat()} is before {installed.isoformat()} (the meter's installed_at)",
            NOW)]
    later = RawRegisters("M-1", installed, installed, blocks, 0.01)
    assert normaliser.registers(later).readings and pipelined(normaliser, later).readings


def pipelined(normaliser: Normaliser, raw: RawRegisters) -> Batch:
    """What the pipeline spools of one poll (it decodes polls as a frame, not with `registers`)."""
    spool = Spooled()
    asyncio.run(Pipeline(normaliser, Validator({}), spool).process([raw]))
    out = Batch()
    for batch in spool.batches:
        out.extend(batch)
    return out
