"""The [mqtt] section and PAYG meter keys: errors with key and line, and what the runtime builds from them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import parse_config
from gateway.runtime.gateway import payg_checker, payload_formats

BASE = """
[mqtt]
enabled = true
{mqtt}

[[meters]]
meter_id = "P-1"
protocol = "mqtt"
{meter}

[[meters]]
meter_id = "M-1"
endpoint = "sim"
unit = 1
{modbus_meter}

[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
"""


def config(mqtt: str = "", meter: str = "", modbus_meter: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(mqtt=mqtt, meter=meter, modbus_meter=modbus_meter), "gw.toml", env={})[0]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"mqtt": 'topics = ["payg/balance"]'},
         "mqtt.topics at line 4: Value error, topic template 'payg/balance' must contain the {meter_id} placeholder "
         "exactly once"),
        ({"mqtt": 'command_topic = "payg/+/{meter_id}"'},
         "mqtt.command_topic at line 4: Value error, topic template 'payg/+/{meter_id}' must not contain '+', '#', "
         "'//' or start with '$'"),
        ({"mqtt": "field_mapping = { credit = '/c' }"}, "mqtt.field_mapping at line 4: Value error, unknown canonical "
         "field(s) in mapping: credit"),
        ({"mqtt": "field_mapping = { balance = 'c' }"},
         "mqtt.field_mapping at line 4: Value error, JSON pointer 'c' must start with '/'"),
        ({"mqtt": 'payload_format = "xml"'}, "mqtt.payload_format at line 4"),
        ({"mqtt": 'timestamp = "local"'}, "mqtt.timestamp at line 4"),
        ({"mqtt": 'protocol = "3.1.1"\nshare_group = "g"'},
         "mqtt.share_group at line 5: shared subscriptions need MQTT 5, but mqtt.protocol = '3.1.1'"),
        ({"mqtt": 'share_group = "a/b"'}, "mqtt.share_group at line 4: Value error, share group 'a/b' must be"),
        ({"mqtt": 'tls_cert = "/c.pem"'}, "mqtt.tls_cert at line 4: tls_cert and tls_key go together"),
        ({"mqtt": 'reply_topic = "payg/{meter_id}/command"'}, "mqtt.reply_topic at line 4: reply_topic must differ"),
        ({"mqtt": 'command_topic = "payg/{meter_id}/balance"'},
         "mqtt.command_topic at line 4: command_topic 'payg/{meter_id}/balance' is also a balance topic"),
        ({"mqtt": '[[mqtt.sources]]\ntopic = "payg/{meter_id}/balance"'},
         "mqtt.sources[0].topic at line 5: topic template 'payg/{meter_id}/balance' is listed twice"),
        ({"modbus_meter": "low_credit_threshold = 3"},
         "meters[1].low_credit_threshold at line 15: meter M-1: only PAYG (MQTT) meters have a low_credit_threshold"),
        ({"meter": "max_drain_per_hour = -1"}, "meters[0].max_drain_per_hour at line 9"),
    ],
)
def test_config_problems_name_key_and_line(kwargs: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**kwargs)
    texts = [str(p) for p in info.value.problems]
    assert any(t.startswith(problem) for t in texts), texts


def test_formats_and_limits_built_from_the_config() -> None:
    cfg = config(
        mqtt='field_mapping = { balance = "/credit" }\ntimestamp = "epoch_s"\nmax_future = 60\n'
             "low_credit_threshold = 20\nmax_payload_bytes = 1024\n"
             '[[mqtt.sources]]\ntopic = "legacy/{meter_id}/credit"\npayload_format = "number"\n'
             '[[mqtt.sources]]\ntopic = "v2/{meter_id}/state"\nfield_mapping = {}\ntimestamp = "iso8601"',
        meter="low_credit_threshold = 7.5\nmax_drain_per_hour = 12")
    formats = dict(payload_formats(cfg))
    assert list(formats) == ["payg/{meter_id}/balance", "legacy/{meter_id}/credit", "v2/{meter_id}/state"]
    main, legacy, v2 = formats.values()
    assert (main.format, main.pointer("balance"), main.timestamp, main.max_future, main.max_bytes) == (
        "json", "/credit", "epoch_s", timedelta(seconds=60), 1024)
    assert (legacy.format, legacy.pointer("balance"), legacy.timestamp) == ("number", "/credit", "epoch_s")
    assert (v2.format, v2.pointer("balance"), v2.timestamp) == ("json", "/balance", "iso8601")
    checker = payg_checker(cfg)
    assert checker.limits("P-1").low_credit_threshold == Decimal("7.5")
    assert checker.limits("P-1").max_drain_per_hour == Decimal(12)
    assert checker.limits("P-other").low_credit_threshold == Decimal(20)
    assert cfg.mqtt.all_topics() == list(formats)
