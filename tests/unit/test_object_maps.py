"""Object maps (code -> channel data files) load from the shipped folder and a user's folders,
and a wrong file is named with its entry and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.objects import load_object_maps
from gateway.errors import ConfigError
from gateway.model.readings import Channel, Kind

GOOD = """
name = "site_meter"
[[objects]]
code = "1-0:1.8.0"
channel = "energy_import"
unit = "Wh"
kind = "cumulative"
"""


def test_a_users_folder_adds_a_map(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(GOOD, encoding="utf-8")
    maps = load_object_maps([tmp_path])
    spec = maps["site_meter"].get("1-0:1.8.0")
    assert spec is not None
    assert (spec.channel, spec.unit, spec.kind) == (Channel.ENERGY_IMPORT, "Wh", Kind.CUMULATIVE)


@pytest.mark.parametrize(("text", "words"), [
    ("name = 'x'\n[[objects]]\ncode = '1-0:1.8.0'\nchannel = 'energy_import'\nunit = 'm3'\n", ["objects[0]", "m3"]),
    ("name = 'x'\n[[objects]]\nchannel = 'energy_import'\n", ["objects[0]", "'code' is missing"]),
    ("name = 'x'\n[[objects]]\ncode = 'a'\nchannel = 'nope'\n", ["objects[0]", "nope"]),
    ("name = \n", ["not valid TOML"]),
])
def test_a_wrong_map_is_named_with_its_entry(tmp_path: Path, text: str, words: list[str]) -> None:
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_object_maps([tmp_path])
    message = str(caught.value)
    assert "bad.toml" in message
    for word in words:
        assert word in message


def test_a_missing_folder_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_object_maps([tmp_path / "absent"])
