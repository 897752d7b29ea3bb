"""The identifier rule (gateway/model/identifiers.py) and the configuration file that uses it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.model.identifiers import (
    MAX_LENGTH,
    PATTERN,
    RULE,
    identifier_error,
    identifier_problem,
    tag_value_problem,
    tags_problems,
)
from gateway.runtime.config import parse_config


@pytest.mark.parametrize(("value", "problem"), [
    ("../../etc/passwd", "contains '/' (a path and topic separator)"),
    ("M..1", "contains '..'"),
    ("M+1", "contains the MQTT wildcard '+'"),
    ("M#1", "contains the MQTT wildcard '#'"),
    ("M*1", "contains the wildcard '*'"),
    ("M?1", "contains the wildcard '?'"),
    ("M%41", "contains '%' (URL escapes)"),
    ("M 1", "contains a space"),
    ("M\u00a01", "contains whitespace U+00A0"),
    ("M\x1b1", "contains the control character U+001B"),
    ("M\ud8001", "contains the lone surrogate U+D800 (not Unicode text)"),
    ("Zähler-1", "contains 'ä'"),
    ("M,1", "contains ','"),
    ("", "is empty"),
    ("x" * 65, "is 65 characters long, more than 64"),
    (".x", "starts with '.', not a letter or digit"),
    ("-x", "starts with '-', not a letter or digit"),
    ("_x", "starts with '_', not a letter or digit"),
])
def test_each_problem_is_named(value: str, problem: str) -> None:
    assert identifier_problem(value) == problem


@pytest.mark.parametrize("value", ["M-0001", "P-00003", "C-1007", "SN-0001", "SDM630-2211-0457", "edge.1:7",
                                   "gw_2.m-3", "1", "M-1.", "x" * MAX_LENGTH])
def test_the_ids_in_use_stay_valid(value: str) -> None:
    assert identifier_problem(value) is None
    assert identifier_error("meter_id", value) is None


def test_the_message_names_field_value_problem_and_rule() -> None:
    assert identifier_error("consumer_number", "C/7") == (
        f"consumer_number 'C/7' contains '/' (a path and topic separator); an identifier is {RULE}")
    long = identifier_error("meter_id", "M" * 10_000)
    assert long is not None and len(long) < 300 and "(10000 characters) is 10000 characters long" in long


@given(st.text(alphabet=st.sampled_from("Mm09._:-/+# %\t.."), max_size=70) | st.text(max_size=70))
def test_the_published_pattern_and_the_function_agree(value: str) -> None:
    """PATTERN (in the OpenAPI document) and identifier_problem (what the gateway checks) are one rule."""
    by_pattern = len(value) <= MAX_LENGTH and re.fullmatch(PATTERN, value) is not None
    assert by_pattern == (identifier_problem(value) is None), value


def test_tags_are_bounded() -> None:
    assert tag_value_problem("F7 / north, ring 2 (ünd mehr)") is None
    assert tag_value_problem("x" * 257) == "is 257 characters long, more than 256"
    assert tag_value_problem("a\nb") == "contains whitespace U+000A"
    assert tag_value_problem("a\x00b") == "contains the control character U+0000"
    assert tags_problems({f"t{i}": "" for i in range(51)}) == ["tags: 51 tags, more than 50"]
    assert tags_problems({"a b": "x", "ok": "y" * 300}) == [
        f"tags key 'a b' contains a space; an identifier is {RULE}",
        "tags.ok: the value is 300 characters long, more than 256"]


CONFIG = """\
[[modbus.endpoints]]
name = "gw1"
host = "127.0.0.1"

[[meters]]
meter_id = "{meter_id}"
endpoint = "gw1"
unit = 1
device_number = "{device_number}"
consumer_number = "{consumer_number}"
tags = {{ feeder = "{feeder}" }}
"""


def problems(**fields: str) -> list[str]:
    values = {"meter_id": "M-1", "device_number": "SN-1", "consumer_number": "C-1", "feeder": "F7", **fields}
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.format(**values), "t.toml", env={})
    return [str(p) for p in info.value.problems]


def test_the_configuration_applies_the_rule_to_every_identifier_with_key_and_line() -> None:
    cfg, _ = parse_config(CONFIG.format(meter_id="edge.1:7", device_number="SDM630-2211-0457",
                                        consumer_number="C-1007", feeder="F7"), "t.toml", env={})
    assert (cfg.meters[0].meter_id, cfg.meters[0].consumer_number) == ("edge.1:7", "C-1007")

    assert problems(meter_id="M..1") == [
        f"meters[0].meter_id at line 6: contains '..'; an identifier is {RULE} (got 'M..1')"]
    assert problems(device_number="SN/1") == [
        f"meters[0].device_number at line 9: contains '/' (a path and topic separator); an identifier is {RULE} "
        "(got 'SN/1')"]
    assert problems(consumer_number="C 1") == [
        f"meters[0].consumer_number at line 10: contains a space; an identifier is {RULE} (got 'C 1')"]
    [tags] = problems(feeder="x" * 10_000)
    assert tags.startswith("meters[0].tags at line 11: tags.feeder: the value is 10000 characters long, more than "
                           "256 (got {'feeder': 'xxx")
    assert tags.endswith("... (10014 characters))") and len(tags) < 300
