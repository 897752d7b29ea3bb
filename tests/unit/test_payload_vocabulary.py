"""Any vendor's PAYG vocabulary (issue 16, item 2): value maps for the relay and emergency credit,
matched case-insensitively, booleans and numbers as keys; exact scales for money sent in minor
units; config errors with key and line; a value the map lacks is a dead letter that shows it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError, PayloadError
from gateway.model.payg import Relay
from gateway.normalise.payload import PayloadFormat
from gateway.runtime.gateway import payload_formats
from tests.unit.test_payg_config import config

TOPIC = "payg/P-1/balance"
RECEIVED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
RELAY = {"relay": {"closed": "connected", "open": "disconnected"}}


def parse(fmt: PayloadFormat, doc: object) -> object:
    return fmt.parse(json.dumps(doc).encode(), TOPIC, "P-1", received_at=RECEIVED)


@pytest.mark.parametrize(("word", "relay"), [("closed", Relay.CONNECTED), ("OPEN", Relay.DISCONNECTED),
                                             (" Closed ", Relay.CONNECTED)])
def test_the_vendors_relay_words_are_mapped_case_insensitively(word: str, relay: Relay) -> None:
    update = parse(PayloadFormat(value_maps=RELAY), {"ts": 1714557600, "balance": 1, "relay": word})
    assert update.relay is relay  # type: ignore[attr-defined]


def test_booleans_and_numbers_are_keys_too() -> None:
    fmt = PayloadFormat(value_maps={"relay": {"true": "connected", "0": "disconnected"},
                                    "emergency_credit_in_use": {"yes": True, "no": "false"}})
    on = parse(fmt, {"ts": 1714557600, "balance": 1, "relay": True, "emergency_credit_in_use": "YES"})
    off = parse(fmt, {"ts": 1714557600, "balance": 1, "relay": 0, "emergency_credit_in_use": "no"})
    assert (on.relay, on.emergency_credit_in_use) == (Relay.CONNECTED, True)  # type: ignore[attr-defined]
    assert (off.relay, off.emergency_credit_in_use) == (Relay.DISCONNECTED, False)  # type: ignore[attr-defined]


def test_a_value_the_map_lacks_is_refused_showing_it_and_the_keys() -> None:
    with pytest.raises(PayloadError) as info:
        parse(PayloadFormat(value_maps=RELAY), {"ts": 1714557600, "balance": 1, "relay": "connected"})
    assert info.value.reason == "unmapped_value"
    assert str(info.value) == (f"topic {TOPIC}: field 'relay' 'connected' is not in its value map "
                               "(mqtt value_maps.relay: 'closed', 'open')")


def test_without_a_map_the_canonical_words_are_still_required() -> None:
    with pytest.raises(PayloadError) as info:
        parse(PayloadFormat(), {"ts": 1714557600, "balance": 1, "relay": "closed"})
    assert info.value.reason == "wrong_type"


def test_scales_turn_minor_units_into_money_exactly() -> None:
    fmt = PayloadFormat(scales={"balance": Decimal("0.01"), "debt": Decimal("0.01"),
                                "last_topup_amount": Decimal("0.01")})
    update = parse(fmt, {"ts": 1714557600, "balance": 1234567, "debt": "250", "last_topup": {"amount": 10050}})
    assert (update.balance, update.debt, update.last_topup_amount) == (  # type: ignore[attr-defined]
        Decimal("12345.67"), Decimal("2.50"), Decimal("100.50"))
    bare = PayloadFormat(format="number", scales={"balance": Decimal("0.01")})
    assert bare.parse(b"995", TOPIC, "P-1", received_at=RECEIVED).balance == Decimal("9.95")


@given(st.integers(min_value=-(10**40), max_value=10**40), st.integers(min_value=0, max_value=6))
def test_a_scale_never_rounds(minor: int, places: int) -> None:
    factor = Decimal(1).scaleb(-places)
    fmt = PayloadFormat(scales={"balance": factor})
    got = fmt.parse(str(minor).encode(), TOPIC, "P-1", received_at=RECEIVED).balance
    sign, digits, exponent = Decimal(minor).as_tuple()
    assert isinstance(exponent, int)
    # Built from the digits, not with arithmetic: Decimal's own context would round past 28 digits.
    assert got == Decimal((sign, digits, exponent - places))


def test_value_maps_and_scales_come_from_the_config_per_source() -> None:
    cfg = config(mqtt='value_maps = { relay = { Closed = "connected", open = "disconnected" } }\n'
                      "scales = { balance = 0.01 }\n"
                      '[[mqtt.sources]]\ntopic = "v2/{meter_id}/state"\n'
                      'value_maps = { relay = { "1" = "connected", "0" = "disconnected" } }\nscales = {}')
    main, v2 = dict(payload_formats(cfg)).values()
    update = main.parse(b'{"ts": 1714557600, "balance": 150, "relay": "CLOSED"}', TOPIC, "P-1", received_at=RECEIVED)
    assert (update.balance, update.relay) == (Decimal("1.50"), Relay.CONNECTED)
    update = v2.parse(b'{"ts": 1714557600, "balance": 150, "relay": 0}', TOPIC, "P-1", received_at=RECEIVED)
    assert (update.balance, update.relay) == (Decimal(150), Relay.DISCONNECTED)


@pytest.mark.parametrize(
    ("mqtt", "problem"),
    [
        ('value_maps = { valve = { shut = "disconnected" } }',
         "mqtt.value_maps at line 4: Value error, value_maps.valve: no such field to map (mappable: relay, "
         "emergency_credit_in_use)"),
        ('value_maps = { relay = { closed = "on" } }',
         "mqtt.value_maps at line 4: Value error, value_maps.relay.closed: maps to 'on', which relay cannot be "
         "(one of connected, disconnected)"),
        ('value_maps = { relay = { closed = "connected", CLOSED = "disconnected" } }',
         "mqtt.value_maps at line 4: Value error, value_maps.relay.CLOSED: repeats 'closed'"),
        ("scales = { credit = 0.01 }", "mqtt.scales at line 4: Value error, scales.credit: no such money field"),
        ("scales = { balance = 0 }", "mqtt.scales at line 4: Value error, scales.balance: 0 must be a positive number"),
        ('[[mqtt.sources]]\ntopic = "v2/{meter_id}/state"\nvalue_maps = { relay = { x = "maybe" } }',
         "mqtt.sources[0].value_maps at line 6: Value error, value_maps.relay.x: maps to 'maybe'"),
    ],
)
def test_a_bad_map_or_scale_is_a_config_error_with_key_and_line(mqtt: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(mqtt=mqtt)
    texts = [str(p) for p in info.value.problems]
    assert any(t.startswith(problem) for t in texts), texts
