"""Money decimals per currency (ISO 4217 minor units, overridable) and what makes two command bodies differ."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.errors import ConfigError
from gateway.model import Command, CommandKind
from gateway.model.currencies import ISO_4217_PUBLISHED, MINOR_UNITS, allowed_decimals, decimals_of
from gateway.runtime.config import parse_config


@pytest.mark.parametrize(("code", "decimals"), [
    ("KES", 2), ("USD", 2), ("EUR", 2), ("JPY", 0), ("UGX", 0), ("KWD", 3), ("BHD", 3), ("TND", 3),
    ("CLF", 4), ("UYW", 4), ("XXX", None), ("XAU", None), ("XDR", None),
])
def test_minor_units_from_the_iso_4217_list(code: str, decimals: int | None) -> None:
    assert MINOR_UNITS[code] == decimals


def test_the_list_is_whole_and_dated() -> None:
    assert ISO_4217_PUBLISHED == "2026-01-01" and len(MINOR_UNITS) == 178
    assert all(len(c) == 3 and c.isupper() for c in MINOR_UNITS)


def test_overrides_and_codes_the_list_does_not_have() -> None:
    assert allowed_decimals("KES", {"KES": 3}) == 3
    assert allowed_decimals("JPY", {"KES": 3}) == 0
    assert allowed_decimals("ZZZ") is None  # not in the list: no limit unless overridden
    assert allowed_decimals("ZZZ", {"ZZZ": 1}) == 1


@pytest.mark.parametrize(("amount", "places"), [
    ("100", 0), ("100.50", 1), ("100.00", 0), ("10.005", 3), ("1E+2", 0), ("0.0000001", 7), ("1.10E-2", 3),
])
def test_decimals_an_amount_needs(amount: str, places: int) -> None:
    assert decimals_of(Decimal(amount)) == places


def test_what_makes_a_repeat_a_different_command() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    stored = Command("gw.1", "P-1", CommandKind.TOPUP, at, amount=Decimal("100.50"), reference="rcpt-1")
    same = Command("gw.2", "P-1", CommandKind.TOPUP, at, amount=Decimal("100.5"), reference="rcpt-1",
                   idempotency_key="k")
    assert stored.differences(same) == []  # ids, times and keys are not the body
    other = Command("gw.3", "P-2", CommandKind.DISCONNECT, at, reference=None)
    assert stored.differences(other) == [
        "meter_id: P-2 in this request, P-1 in the stored command",
        "kind: disconnect in this request, topup in the stored command",
        "amount: none in this request, 100.50 in the stored command",
        "reference: none in this request, rcpt-1 in the stored command",
    ]


def test_currency_decimals_in_the_config() -> None:
    cfg, _ = parse_config('[mqtt]\ncurrency = "KES"\ncurrency_decimals = { KES = 3 }\n', "t.toml", env={})
    assert cfg.mqtt.currency_decimals == {"KES": 3}
    with pytest.raises(ConfigError) as info:
        parse_config('[mqtt]\ncurrency_decimals = { kes = 3, KWD = 7 }\n', "t.toml", env={})
    assert [str(p) for p in info.value.problems] == [
        "mqtt.currency_decimals at line 2: Value error, currency 'kes' must be a three-letter code in capitals, "
        "as ISO 4217 writes them (e.g. KES); KWD = 7: decimals must be 0 to 6 (got {'kes': 3, 'KWD': 7})"]
