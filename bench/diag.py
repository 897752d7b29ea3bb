"""Diagnostics benchmark (issue 8). Not a test: prints a table.

    .venv/bin/python bench/diag.py            # full: 1,000 Modbus meters on 5 simulated buses
    .venv/bin/python bench/diag.py --quick    # under a minute: 200 meters on 1 bus

Two figures:

  hot path   what HealthBook.observe (per-meter diagnostics) and GatewayMetrics.observe_items
             (Prometheus counters) add to every pipeline pass, measured on passes of 500 polls
             of a 7-channel meter (3,500 readings), as nanoseconds per reading.
  API        a real gateway (embedded SQLite store) polls the fleet every `--interval` seconds,
             5 % of the meters made to time out; then p50 / p99 latency of each technician
             endpoint (/v1/diag/meters, /v1/diag/status, one meter, /status/panel, /metrics,
             /readyz) over repeated calls while it polls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.machine import speed, table
from drivers.samples import RawRegisters, RegisterBlock
from gateway.config.load import cross_check
from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel, Kind, Reading, Source
from gateway.runtime import eventloop
from gateway.runtime.config import GatewayConfig
from gateway.runtime.health import HealthBook, WatchedMeter
from gateway.runtime.metrics import GatewayMetrics
from simulators.modbus import SimFleet
from tests.browser.diag_setup import make_key, running

CHANNELS = (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT, Channel.POWER, Channel.VOLTAGE_L1, Channel.CURRENT_L1,
            Channel.FREQUENCY, Channel.POWER_FACTOR)


def hot_path(meters: int, passes: int) -> dict[str, float]:
    """ns per reading of HealthBook.observe and GatewayMetrics.observe_items."""
    book = HealthBook([WatchedMeter(f"M-{i:05d}", "modbus", f"bus unit {i}", endpoint="bus", unit=1 + i % 247)
                       for i in range(meters)])
    metrics = GatewayMetrics()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    work = []
    for p in range(passes):
        items, readings = [], []
        for k in range(500):
            meter = f"M-{(p * 500 + k) % meters:05d}"
            ts = t0 + timedelta(seconds=p)
            items.append(RawRegisters(meter, ts, ts, (RegisterBlock(4, 0, tuple(range(14))),), 0.004))
            readings += [Reading(meter, ch, ts, float(k), Kind.INSTANTANEOUS, source=Source.MODBUS, received_at=ts)
                         for ch in CHANNELS]
        work.append((items, Batch(readings=readings)))
    n = sum(len(b.readings) for _, b in work)
    out = {}
    for name, observe in (("HealthBook.observe", book.observe), ("GatewayMetrics.observe_items",
                                                                  metrics.observe_items)):
        start = time.perf_counter()
        for items, batch in work:
            observe(items, batch)
        out[name] = (time.perf_counter() - start) / n * 1e9
    return out


def config(data_dir: Path, fleets: list[SimFleet], per_bus: int, interval: float) -> GatewayConfig:
    doc: dict[str, Any] = {
        "gateway": {"id": "bench", "data_dir": str(data_dir), "queue_size": 100_000},
        "api": {"host": "127.0.0.1", "port": 0},
        "modbus": {"default_interval": interval, "endpoints": [], "breaker_cooldown": 30.0},
        "diag": {"raw_reads_per_second": 50},
        "meters": [],
    }
    for b, fleet in enumerate(fleets):
        doc["modbus"]["endpoints"].append({"name": f"bus-{b}", "host": "127.0.0.1", "port": fleet.port,
                                           "timeout": 0.5, "retries": 0})
        doc["meters"] += [{"meter_id": f"M-{b * per_bus + u:05d}", "endpoint": f"bus-{b}", "unit": u}
                          for u in range(1, per_bus + 1)]
    cfg = GatewayConfig.model_validate(doc)
    problems = cross_check(cfg, load_profiles(), {})
    assert not problems, problems
    return cfg


async def timed(api: httpx.AsyncClient, path: str, auth: dict[str, str], calls: int) -> tuple[float, float, int]:
    times = []
    size = 0
    await api.get(path, headers=auth)  # the first call of a route builds its serializers: not timed
    for _ in range(calls):
        start = time.perf_counter()
        resp = await api.get(path, headers=auth)
        times.append((time.perf_counter() - start) * 1000)
        assert resp.status_code in (200, 503), (path, resp.status_code, resp.text[:200])
        size = len(resp.content)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], size


async def api_latency(buses: int, per_bus: int, interval: float, calls: int, warmup: float) -> list[tuple[str, ...]]:
    profile = load_profiles()["generic"]
    fleets = [SimFleet(profile, per_bus, seed=b + 1, speedup=60, meter_ids=[f"M-{b * per_bus + u:05d}"
                                                                             for u in range(1, per_bus + 1)])
              for b in range(buses)]
    for fleet in fleets:
        await fleet.start()
    try:
        for b, fleet in enumerate(fleets):  # 5 % of the fleet silent: their polls time out
            for u in range(1, per_bus + 1, 20):
                fleet.set_fault(f"M-{b * per_bus + u:05d}", "timeout")
        with tempfile.TemporaryDirectory(prefix="bench-diag-") as tmp:
            cfg = config(Path(tmp), fleets, per_bus, interval)
            async with running(cfg) as (gw, api):
                auth = await make_key(gw)
                await asyncio.sleep(warmup)
                rows: list[tuple[str, ...]] = []
                for label, path in (("fleet  GET /v1/diag/meters", "/v1/diag/meters"),
                                    ("status GET /v1/diag/status", "/v1/diag/status"),
                                    ("meter  GET /v1/diag/meters/{id}", "/v1/diag/meters/M-00002"),
                                    ("page   GET /status/panel", "/status/panel"),
                                    ("       GET /metrics", "/metrics"),
                                    ("       GET /readyz", "/readyz")):
                    p50, p99, size = await timed(api, path, auth, calls)
                    rows.append((label, f"{p50:.1f}", f"{p99:.1f}", f"{size / 1024:.0f}"))
                status = (await api.get("/v1/diag/status", headers=auth)).json()
                rate = sum(d["polls_per_s"] for d in status["drivers"]["modbus"])
                rows.append((f"(the gateway polled {rate:.0f}/s meanwhile)", "", "", ""))
                return rows
    finally:
        for fleet in fleets:
            await fleet.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 meters on one bus, fewer calls (under a minute)")
    args = ap.parse_args()
    print(speed())
    buses, per_bus, calls, interval, warmup = (1, 200, 30, 5.0, 12.0) if args.quick else (5, 200, 100, 10.0, 30.0)
    print(f"diag benchmark: {buses * per_bus} meters on {buses} bus(es), polled every {interval:g} s; "
          f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores")
    ns = hot_path(buses * per_bus, 20)
    table("hot path (per reading, passes of 500 polls x 7 channels)", ("observer", "ns / reading"),
          [(k, f"{v:.0f}") for k, v in ns.items()])
    rows = eventloop.run(api_latency(buses, per_bus, interval, calls, warmup))  # as the gateway runs
    table(f"API latency over {calls} calls while polling", ("endpoint", "p50 ms", "p99 ms", "KiB"), rows)
    print(f"\nload after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
