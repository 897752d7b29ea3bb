"""Docker cannot run here, so check what can be checked: the compose file is well-formed, and
every service, port, volume, file, environment variable and command it names exists in the
code and config; the Dockerfile builds with the same script the tests use; the Mosquitto
config of the stack starts a real Mosquitto."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.runtime.config import SECRET_ENV, parse_config
from tests.fixtures.ports import free_port, wait_port

DEPLOY = Path(__file__).parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"timescaledb", "mosquitto", "gateway", "modbus-sim", "payg-sim"}
    for name, svc in services.items():
        if "image" in svc:
            _, _, tag = svc["image"].partition(":")
            assert tag and tag != "latest" and re.match(r"\d", tag), f"{name}: image {svc['image']} is not pinned"
        else:
            assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
            assert (DEPLOY.parent / svc["build"]["dockerfile"]).is_file()
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    assert services["modbus-sim"]["profiles"] == ["demo"] and services["payg-sim"]["profiles"] == ["demo"]


def test_volumes_and_files_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for spec in svc.get("volumes", []):
            source = spec.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_environment_names_are_the_code_s(compose: dict[str, Any]) -> None:
    env = compose["services"]["gateway"]["environment"]
    assert set(env) <= set(SECRET_ENV), set(env) - set(SECRET_ENV)
    dsn = env["METER_GATEWAY_STORAGE_DSN"]
    db = compose["services"]["timescaledb"]["environment"]
    assert f"@timescaledb:5432/{db['POSTGRES_DB']}" in dsn and dsn.startswith(f"postgresql://{db['POSTGRES_USER']}:")


def test_gateway_config_of_the_stack_is_valid_and_matches_ports(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "compose" / "gateway.toml").read_text()
    cfg, _ = parse_config(text, "gateway.toml", env={"METER_GATEWAY_STORAGE_DSN": "postgresql://u:p@timescaledb/meters"})
    services = compose["services"]
    assert f"{cfg.api.port}:{cfg.api.port}" in services["gateway"]["ports"]
    assert cfg.mqtt.host == "mosquitto" and f"{cfg.mqtt.port}:1883" in services["mosquitto"]["ports"]
    [endpoint] = cfg.modbus.endpoints
    assert endpoint.host == "modbus-sim" and str(endpoint.port) in services["modbus-sim"]["command"]
    assert str(endpoint.port) in [str(p) for p in services["modbus-sim"]["expose"]]


@pytest.mark.parametrize("service", ["modbus-sim", "payg-sim"])
def test_simulator_commands_exist(compose: dict[str, Any], service: str) -> None:
    command = compose["services"][service]["command"]
    help_text = subprocess.run([sys.executable, "-m", "gateway", *command[:2], "--help"],
                               capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert help_text.returncode == 0, help_text.stderr
    for flag in (c for c in command if c.startswith("--")):
        assert flag in help_text.stdout, f"{service}: {' '.join(command[:2])} has no option {flag}"


def test_dockerfile_shape() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2  # multi-stage
    assert "bash deploy/scripts/bootstrap.sh install" in text
    assert re.search(r"^USER meter-gateway$", text, re.M)
    assert "HEALTHCHECK" in text and "/readyz" in text
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (DEPLOY.parent / src).exists(), f"COPY {src}: no such file"
    port = parse_config((DEPLOY / "compose" / "gateway.toml").read_text(), "g", env={
        "METER_GATEWAY_STORAGE_DSN": "postgresql://x"})[0].api.port
    assert f"EXPOSE {port}" in text and f"127.0.0.1:{port}/readyz" in text


def test_stack_mosquitto_config_starts_a_real_broker(tmp_path: Path) -> None:
    port = free_port()
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/").replace("log_dest stdout", f"log_dest file {tmp_path}/log")
    (tmp_path / "m.conf").write_text(conf + "user root\n")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([mosquitto, "-c", str(tmp_path / "m.conf")], stderr=subprocess.PIPE)
    try:
        wait_port(port, timeout=10)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
