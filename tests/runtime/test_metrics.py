"""/metrics over a running gateway with real simulated meters: names, labels, values."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_reflect_polls_failures_and_spool(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=2, speedup=60) as fleet:
        fleet.meters[2].fault = "timeout"
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.2)
        async with running_gateway(cfg) as (_, api):
            async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
                resp = await api.get("/metrics")
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/plain")
                got = samples(resp.text)
                lost = got.get(("meter_gateway_meters", (("state", "lost"),)), 0)
                ok_polls = got.get(("meter_gateway_polls_total", (("result", "ok"),)), 0)
                timeouts = got.get(("meter_gateway_polls_total", (("result", "timeout"),)), 0)
                rows = got.get(("meter_gateway_sink_rows_total", ()), 0)
                return got if lost == 1 and ok_polls >= 3 and timeouts >= 3 and rows else None

            got = await eventually(scraped, timeout=60)
    assert got[("meter_gateway_polls_total", (("result", "timeout"),))] >= 3
    assert got[("meter_gateway_meters", (("state", "ok"),))] == 1
    assert got[("meter_gateway_readings_total", (("flag", "none"),))] >= 7
    assert got[("meter_gateway_poll_latency_seconds_count", ())] >= 3
    assert got[("meter_gateway_events_total", (("kind", "comm_lost"),))] == 1
    assert got[("meter_gateway_sink_up", ())] == 1
    assert ("meter_gateway_spool_items", ()) in got and ("meter_gateway_spool_oldest_age_seconds", ()) in got
    assert got[("meter_gateway_build_info", (("gateway_id", "test"), ("storage_mode", "sqlite"), ("version", "0.1.0")))] == 1
    # No per-meter labels anywhere.
    assert not any("meter_id" in dict(labels) for _, labels in got)
