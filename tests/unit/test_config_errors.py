"""A bad configuration gets one message per problem, naming the key and its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import load_config, parse_config

GOOD = """\
[gateway]
id = "edge-1"

[[modbus.endpoints]]
name = "gw1"
host = "127.0.0.1"
port = 5020

[[meters]]
meter_id = "M-1"
endpoint = "gw1"
unit = 1
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    return [str(p) for p in info.value.problems]


def test_good_config_loads() -> None:
    cfg, profiles = parse_config(GOOD, "t.toml", env={})
    assert cfg.meters[0].meter_id == "M-1"
    assert "generic" in profiles


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace('port = 5020', 'port = "x"'),
     ["modbus.endpoints[0].port at line 7: Input should be a valid integer, unable to parse string as an integer (got 'x')"]),
    (GOOD + 'colour = "red"\n', ["meters[0].colour at line 13: unknown key (check its spelling)"]),
    (GOOD.replace('endpoint = "gw1"', 'endpoint = "gw9"'),
     ["meters[0].endpoint at line 11: unknown endpoint 'gw9' (known: gw1)"]),
    (GOOD + '\n[[meters]]\nmeter_id = "M-1"\nendpoint = "gw1"\nunit = 2\nprofile = "sdm360"\n',
     ["meters[1].meter_id at line 15: meter 'M-1' repeats meters[0]",
      "meters[1].profile at line 18: unknown profile 'sdm360' (known: abb_b21, abb_b23, aquametro_calec_st, "
      "cg_em340, cg_et340, em24, finder_7m38, generic, generic_tou, iem3x55, inepro_pro380, janitza_umg604, janitza_umg96rm, "
      "orno_we514, orno_we516, pm5xxx, sdm120, sdm230, sdm630, sdm72dm, sdm72dm_v2, socomec_countis_e2x)"]),
    (GOOD.replace('unit = 1', 'unit = 1\ndevice_number = "SN-1"')
     + '\n[[meters]]\nmeter_id = "M-2"\nendpoint = "gw1"\nunit = 2\ndevice_number = "SN-1"\n'
     + '\n[[meters]]\nmeter_id = "W-3"\nutility = "water"\nendpoint = "gw1"\nunit = 3\ndevice_number = "SN-1"\n',
     ["meters[1].device_number at line 19: device_number 'SN-1' is already on meters[0] (M-1); device numbers are "
      "unique per utility (electricity)"]),
    (GOOD.replace("unit = 1", "unit = 300"),
     ["meters[0].unit at line 12: Input should be less than or equal to 247 (got 300)"]),
    ('[storage]\nbackend = "timescale"\n',
     ["storage.dsn at line 1: backend 'timescale' needs a DSN (or env METER_GATEWAY_STORAGE_DSN)"]),
    ('[storage]\nbilling_estimate_window = "a while"\n',
     ["storage.billing_estimate_window at line 2: Value error, 'a while' is not a period like '400 days', '8 weeks' "
      "or '12 hours' (units: minutes, hours, days, weeks) (got 'a while')"]),
    ('[gateway]\nqueue_size = 1\n[api]\nport = 70000\n',
     ["gateway.queue_size at line 2: Input should be greater than or equal to 10 (got 1)",
      "api.port at line 4: Input should be less than or equal to 65535 (got 70000)"]),
])
def test_problem_messages(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_not_toml_names_the_line() -> None:
    [msg] = problems('[gateway]\nid = "x\n')
    assert msg.startswith("(file) at line 2: not valid TOML:")


def test_env_overrides_secret() -> None:
    cfg, _ = parse_config('[storage]\nbackend = "timescale"\n', "t.toml",
                          env={"METER_GATEWAY_STORAGE_DSN": "postgresql://u:p@h/db"})
    assert cfg.storage.dsn == "postgresql://u:p@h/db"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value.problems[0]) == "(file): no such file"


@pytest.mark.parametrize(("content", "needle"), [
    (None, "(file): no such file"),
    ("[gateway\n", "not valid TOML"),
    (GOOD.replace("unit = 1", "unit = 0"), "meters[0].unit at line 12"),
])
def test_cli_config_check_exit_2_without_traceback(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "gw.toml"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "gateway", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_config_check_summary(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    proc = subprocess.run([sys.executable, "-m", "gateway", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "modbus meters" in proc.stdout and "edge-1" in proc.stdout


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "deploy" / "config.example.toml"
    cfg, _ = load_config(example, env={})
    assert cfg.meters
