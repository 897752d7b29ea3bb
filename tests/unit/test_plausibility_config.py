"""Issue 19: the [plausibility] section and [[meters]] installed_at: documented defaults, errors that
name the key and its line, and the bounds the gateway builds from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.errors import ConfigError
from gateway.model import Channel
from gateway.model.samples import RawPayload
from gateway.normalise.plausibility import CHANNEL_LIMITS, Bounds
from gateway.runtime.config import parse_config
from gateway.runtime.plan import bounds, build_normaliser, meter_facts

PAYG = '[mqtt]\nenabled = true\ncurrency = "KES"\n[[meters]]\nmeter_id = "P-1"\nprotocol = "mqtt"\npayg = true\n'


def test_the_defaults_are_the_documented_bounds() -> None:
    cfg, _ = parse_config("", "t.toml", env={})
    assert bounds(cfg) == Bounds()
    assert Bounds().money_max == Decimal(10) ** 9 and Bounds().extra_decimals == 2
    assert Bounds().ts_floor == datetime(2010, 1, 1, tzinfo=UTC) and Bounds().currencies is None
    assert Bounds().channels == CHANNEL_LIMITS


def test_max_ahead_and_the_registry_refresh_have_documented_defaults_and_are_configurable() -> None:
    cfg, _ = parse_config("", "t.toml", env={})
    assert (cfg.plausibility.max_ahead, cfg.plausibility.installed_refresh) == (86400.0, 30.0)
    assert Bounds().max_ahead == timedelta(days=1)
    cfg, _ = parse_config("[plausibility]\nmax_ahead = 3600\ninstalled_refresh = 5\n", "t.toml", env={})
    assert bounds(cfg).max_ahead == timedelta(hours=1) and cfg.plausibility.installed_refresh == 5.0


def test_the_section_and_installed_at_make_the_bounds() -> None:
    cfg, _ = parse_config("[plausibility]\nmoney_max = 1e6\nmoney_max_by_currency = { IRR = 1e13 }\n"
                          'extra_decimals = 0\ncurrencies = ["KES"]\nts_floor = 2015-01-01T00:00:00\n'
                          "[plausibility.channels]\nvoltage_l1 = [0, 1000]\n"
                          "[mqtt]\nenabled = true\ncurrency = \"KES\"\ncurrency_decimals = { KES = 3 }\n"
                          '[[meters]]\nmeter_id = "P-1"\nprotocol = "mqtt"\npayg = true\ninstalled_at = 2024-05-01\n',
                          "t.toml", env={})
    got = bounds(cfg)
    assert (got.money_max, dict(got.money_max_by_currency), got.extra_decimals, got.currencies) == \
        (Decimal(10) ** 6, {"IRR": Decimal(10) ** 13}, 0, frozenset({"KES"}))
    assert got.ts_floor == datetime(2015, 1, 1, tzinfo=UTC)  # no zone: UTC
    assert dict(got.installed) == {"P-1": datetime(2024, 5, 1, tzinfo=UTC)}
    assert got.channels[Channel.VOLTAGE_L1] == (0.0, 1000.0)
    assert got.channels[Channel.POWER] == CHANNEL_LIMITS[Channel.POWER]
    # The gateway's normaliser holds them, with the meter's currency decimals.
    normaliser = build_normaliser(cfg, meter_facts(cfg))
    at = datetime(2026, 3, 2, tzinfo=UTC)

    def sent(payload: bytes) -> str:
        batch = normaliser.payload(RawPayload("payg/P-1/balance", payload, at, "P-1"))
        return batch.deadletters[0].detail if batch.deadletters else str(batch.balances[0].balance)

    assert sent(b"12.345") == "12.345"  # KES 3 ([mqtt] currency_decimals) + 0
    assert sent(b"12.3456").endswith("has 4 decimal places; KES allows at most 3 (its minor unit + "
                                      "[plausibility] extra_decimals)")
    assert sent(b"1000001") == ("topic payg/P-1/balance: field 'balance' 1000001 KES is beyond ±1,000,000 KES "
                                "([plausibility] money_max)")
    assert "(the meter's installed_at)" in sent(b'{"ts": "2024-04-30T00:00:00Z", "balance": 1}')


@pytest.mark.parametrize(("text", "problem"), [
    ("[plausibility]\nmoney_max = 0\n", "plausibility.money_max at line 2: Input should be greater than 0"),
    ('[plausibility]\ncurrencies = ["KES", "kes"]\n',
     "plausibility.currencies at line 2: Value error, 'kes': a currency is three capital letters (ISO 4217)"),
    ("[plausibility]\nmoney_max_by_currency = { IRR = -1 }\n",
     "plausibility.money_max_by_currency at line 2: Value error, each money_max must be a number > 0"),
    ("[plausibility]\nextra_decimals = -1\n", "plausibility.extra_decimals at line 2: Input should be greater than"),
    ('[plausibility]\nts_floor = "yesterday"\n', "plausibility.ts_floor at line 2: Input should be a valid datetime"),
    ("[plausibility.channels]\nvoltage_l1 = [10, 1]\n",
     "plausibility.channels at line 1: Value error, voltage_l1 = [10, 1]: low must not be above high"),
    ("[plausibility.channels]\nvoltage_l9 = [10, 100]\n", "plausibility.channels.voltage_l9.[key] at line 2"),
    ("[plausibility]\nmoney = 1\n", "plausibility.money at line 2: unknown key"),
    ("[plausibility]\nmax_ahead = 0\n", "plausibility.max_ahead at line 2: Input should be greater than 0"),
    ("[plausibility]\ninstalled_refresh = -1\n", "plausibility.installed_refresh at line 2: Input should be greater"),
    (PAYG + 'installed_at = "soon"\n', "meters[0].installed_at at line 8: Input should be a valid datetime"),
])
def test_a_bad_key_is_named_with_its_line(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    assert problem in str(info.value)
