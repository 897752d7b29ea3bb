"""Hypothesis strategies for issue 22's property tests: whatever a meter or a broker can deliver.

`payloads` draws arbitrary bytes, arbitrary JSON, and balance messages whose every field may be
odd: numbers written as raw JSON tokens (exponents of up to 22 digits, far past any decimal
context), text with NUL and lone surrogates (escaped, as JSON carries them), timestamps of any
year and zone, nested values where numbers belong. `passes` draws passes of Modbus polls of the
shipped profiles with arbitrary 16-bit words, short blocks, and any clock; now and then a poll
holds a word of more than 16 bits, as a driver with a bug would hand over (`broken`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from drivers.modbus.plan import plan_reads
from drivers.samples import RawRegisters, RegisterBlock
from gateway.model.profiles import DeviceProfile
from tests.poison import ODD, POISON

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())

#: Every character, NUL and lone surrogates included (hypothesis leaves surrogates out by default).
texts = st.text(st.characters(exclude_categories=()), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
#: JSON number tokens as a meter may write them, exponents far past what a decimal computes with.
numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,22})?", fullmatch=True)
moderate = st.from_regex(r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,4})?", fullmatch=True)
zones = st.sampled_from([UTC, timezone(timedelta(hours=-12)), timezone(timedelta(hours=14)),
                         timezone(timedelta(hours=5, minutes=45))])
iso = st.builds(lambda d, z: json.dumps(d.replace(tzinfo=z).isoformat()),
                st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)), zones)
timestamps = st.one_of(
    st.integers(EPOCH - 10**8, EPOCH + 600).map(str),  # epoch seconds, mostly storable
    st.integers(EPOCH * 1000 - 10**11, EPOCH * 1000 + 600_000).map(str),  # epoch milliseconds
    numbers, iso, texts.map(json.dumps), json_values.map(json.dumps),
)
odd_values = st.one_of(numbers, moderate, texts.map(json.dumps), json_values.map(json.dumps))


def _object(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


balance_messages = st.fixed_dictionaries(
    {"ts": timestamps, "balance": st.one_of(moderate, numbers, odd_values)},
    optional={
        "currency": st.one_of(st.sampled_from(['"KES"', '"eur"', '" usd "']), texts.map(json.dumps), odd_values),
        "emergency_credit": st.one_of(moderate, odd_values),
        "emergency_credit_in_use": st.one_of(st.sampled_from(["true", "false"]), odd_values),
        "debt": st.one_of(moderate, odd_values),
        "relay": st.one_of(st.sampled_from(['"connected"', '"DISCONNECTED"']), odd_values),
        "last_topup": st.fixed_dictionaries({}, optional={"amount": st.one_of(moderate, odd_values),
                                                          "ts": timestamps}).map(_object) | odd_values,
        "extra": json_values.map(json.dumps),
    },
).map(lambda fields: _object(fields).encode())

KNOWN_POISON = [p.payload(EPOCH) for p in POISON + ODD]
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    balance_messages,
    st.sampled_from(KNOWN_POISON),
)


def broken(raw: RawRegisters) -> bool:
    """The poll holds a word no register holds."""
    return any(w > 0xFFFF for block in raw.blocks for w in block.words)


@st.composite
def polls(draw: st.DrawFn, meters: dict[str, DeviceProfile]) -> RawRegisters:
    """One poll of one of `meters`, with arbitrary words, maybe a short block, any clock."""
    meter_id = draw(st.sampled_from(sorted(meters)))
    blocks = []
    for block in plan_reads(meters[meter_id]):
        count = block.end - block.address
        if draw(st.integers(0, 9)) == 0:
            count = draw(st.integers(0, count))  # a short read
        words = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
        if words and draw(st.integers(0, 19)) == 0:
            words[draw(st.integers(0, len(words) - 1))] = draw(st.integers(0x10000, 0xFFFFFFFF))
        blocks.append(RegisterBlock(block.function.code, block.address, tuple(words)))
    ts = NOW + timedelta(seconds=draw(st.integers(-10**9, 10**6)))
    lag = timedelta(seconds=draw(st.integers(-3600, 10**6)))
    return RawRegisters(meter_id, ts, ts + lag, tuple(blocks), 0.01)


def passes(meters: dict[str, DeviceProfile]) -> st.SearchStrategy[list[RawRegisters]]:
    return st.lists(polls(meters), min_size=1, max_size=8)


__all__ = ["EPOCH", "KNOWN_POISON", "NOW", "broken", "passes", "payloads", "polls"]
