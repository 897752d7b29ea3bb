"""The shipped alert rules, evaluated by promtool on series taken from a real gateway's
/metrics: two scrapes a few seconds apart give each series its value and its trend, which
is extrapolated over the rules' `for` windows. Rules that name a metric the gateway does not
export, or a label it does not use, cannot fire here and fail the test."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.timescale import PgCluster
from tests.fixtures.tmpfs import fill, mounted_tmpfs

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"
ALERTS = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
STEP_S = 60  # promtool input interval
SAMPLES = 40  # 40 minutes of series


def _series(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {**s.labels, "instance": "gw", "job": "meter-gateway"}
            body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{s.name}{{{body}}}"] = s.value
    return out


async def scrape_trend(api: httpx.AsyncClient, seconds: float = 4.0) -> list[dict[str, str]]:
    """promtool input_series from two scrapes: each series moves per minute as it moved between them."""
    first = _series((await api.get("/metrics")).text)
    await asyncio.sleep(seconds)
    second = _series((await api.get("/metrics")).text)
    series = [{"series": 'up{instance="gw",job="meter-gateway"}', "values": f"1x{SAMPLES}"}]
    for name, value in second.items():
        slope = (value - first.get(name, value)) / seconds * STEP_S
        series.append({"series": name, "values": f"{value:g}{slope:+g}x{SAMPLES}"})
    return series


def promtool_alerts(tmp_path: Path, series: list[dict[str, str]], expect_firing: set[str]) -> None:
    assert expect_firing <= set(ALERTS)
    # promtool compares annotations word for word, and ours template live values; the
    # expressions, `for` windows and labels are what is under test, so drop annotations.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules_path = tmp_path / "alerts.yml"
    rules_path.write_text(yaml.safe_dump(rules))
    test = {
        "rule_files": [str(rules_path)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name,
                 "exp_alerts": [{"exp_labels": _labels(name)}] if name in expect_firing else []}
                for name in ALERTS
            ],
        }],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bootstrap.sh test installs Debian's prometheus package"
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _labels(alert: str) -> dict[str, Any]:
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r["alert"] == alert)
    labels = {**rule.get("labels", {}), "instance": "gw"}
    if "sum by" not in rule["expr"] and "clamp_min" not in rule["expr"]:
        labels["job"] = "meter-gateway"
    return labels


async def test_fleet_with_silent_garbage_and_slow_meters(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 5, seed=4, speedup=60) as fleet:
        fleet.meters[3].fault = "timeout"
        fleet.meters[4].fault = "garbage"
        fleet.meters[5].fault = "slow"
        fleet.meters[5].delay = 0.6
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=5, interval=0.25)
        async with running_gateway(cfg) as (gw, api):
            await eventually(lambda: any(h.comm_lost for p in gw.pollers.values() for h in p.health().values()), timeout=30)
            series = await scrape_trend(api)
    promtool_alerts(tmp_path, series, {"MeterGatewayMetersSilent", "MeterGatewayDeadLetters", "MeterGatewayPollOverruns"})


async def test_store_and_broker_down(tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str,
                                     mqtt_broker_stopped: Broker) -> None:
    pg_cluster.stop()
    async with SimFleet(load_profiles()["generic"], 3, seed=4, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.5, backend="timescale",
                             dsn=timescale_dsn, broker_port=mqtt_broker_stopped.port, payg_ids=["P-0001"],
                             spool={"max_bytes": 1_000_000})
        async with running_gateway(cfg) as (gw, api):
            await eventually(lambda: gw.spool is not None and gw.spool.stats().items > 0)
            series = await scrape_trend(api)
    promtool_alerts(tmp_path, series, {"MeterGatewaySinkDown", "MeterGatewaySpoolBacklog",
                                       "MeterGatewaySpoolNearlyFull", "MeterGatewayBrokerDisconnected"})


async def test_full_disk(tmp_path: Path) -> None:
    """The spool's disk is full; the store is on another disk and keeps working."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as disk:
        async with SimFleet(load_profiles()["generic"], 2, seed=4, speedup=60) as fleet:
            cfg = gateway_config(disk / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.25,
                                 storage={"sqlite_path": str(tmp_path / "store.db")})
            async with running_gateway(cfg) as (gw, api):
                assert gw.spool is not None and gw.forwarder is not None
                spool, forwarder = gw.spool, gw.forwarder
                await eventually(lambda: forwarder.state.rows > 0)
                filler = fill(disk)
                try:
                    await eventually(lambda: spool.stats().blocked is not None)
                    series = await scrape_trend(api)
                finally:
                    filler.unlink()
    # Whether a batch was waiting when the disk filled (its age then grows: MeterGatewaySpoolBacklog,
    # tested with the store down) depends on the moment; this test is about the spool's own alert.
    series = [s for s in series if not s["series"].startswith("meter_gateway_spool_oldest_age_seconds")]
    promtool_alerts(tmp_path, series, {"MeterGatewaySpoolBlocked"})


async def test_healthy_gateway_fires_nothing(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=4, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.25)
        async with running_gateway(cfg) as (gw, api):
            await eventually(lambda: gw.forwarder is not None and gw.forwarder.state.rows > 0, timeout=30)
            series = await scrape_trend(api)
    promtool_alerts(tmp_path, series, set())
