"""`meter-gateway demo`: simulated meters, a private broker, the embedded store and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.config.profiles import load_profiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.mbus.server import serve_tcp
from simulators.mbus.slave import Bus, heat, water
from simulators.modbus import SimFleet
from simulators.mqtt.payg import PaygFleet
from storage.keys import Scope, new_key

log = logging.getLogger(__name__)

#: The demo's meters that misbehave on purpose, so the status page, the events and VEE show something
#: on first sight: one meter that never answers, one whose register goes backwards after a few polls,
#: and one PAYG meter at low credit.
SILENT_METER = "M-0003"
REGRESSING_METER = "M-0002"
LOW_CREDIT_METER = "P-0001"
#: Polls of the regressing meter before its register drops: VEE needs a good value to compare with.
_POLLS_BEFORE_REGRESSION = 3
#: The demo's wired M-Bus meters (an M-Bus-to-Ethernet converter simulated on a local port): two water
#: meters and a heat meter; the second water meter reports "power low" in its status byte.
MBUS_METERS = (("W-0001", "water", 1), ("W-0002", "water", 2), ("H-0001", "heat", 3))
LOW_BATTERY_METER = "W-0002"


def demo_config(data_dir: Path, api_port: int, modbus_port: int, broker_port: int, n_modbus: int,
                n_payg: int, interval: float, mbus_port: int | None = None) -> GatewayConfig:
    doc: dict[str, Any] = {
        "gateway": {"id": "demo", "data_dir": str(data_dir)},
        "api": {"host": "127.0.0.1", "port": api_port},
        "storage": {"backend": "sqlite"},
        "modbus": {"default_interval": interval,
                   "endpoints": [{"name": "sim", "host": "127.0.0.1", "port": modbus_port, "timeout": 1.0}]},
        "mqtt": {"enabled": n_payg > 0, "host": "127.0.0.1", "port": broker_port, "client_id": "meter-gateway-demo",
                 "currency": "KES", "topics": ["payg/{meter_id}/balance"]},
        "meters": [{"meter_id": f"M-{i:04d}", "endpoint": "sim", "unit": i, "profile": "generic",
                    "consumer_number": f"C-{1000 + i}", "location": f"{i} Demo Street"} for i in range(1, n_modbus + 1)]
        + [{"meter_id": f"P-{i:04d}", "protocol": "mqtt", "payg": True, "consumer_number": f"C-{2000 + i}"}
           for i in range(1, n_payg + 1)],
    }
    if mbus_port is not None:
        doc["mbus"] = {"default_interval": interval,
                       "buses": [{"name": "mbus-sim", "host": "127.0.0.1", "port": mbus_port, "timeout": 1.0}]}
        doc["meters"] += [{"meter_id": m, "protocol": "mbus", "utility": kind, "bus": "mbus-sim", "primary_address": a,
                           "mbus_map": f"mbus_{kind}"} for m, kind, a in MBUS_METERS]
    return GatewayConfig.model_validate(doc)


def mbus_fleet() -> Bus:
    """The demo's M-Bus slaves (MBUS_METERS), their counters advanced by `_tick_mbus`."""
    bus = Bus([(water if kind == "water" else heat)(a, 10000000 + a) for _, kind, a in MBUS_METERS])
    bus.slaves[1].faults.status = 0x04  # power low: an anomaly event
    return bus


async def _tick_mbus(bus: Bus, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for slave in bus.slaves:
            v = slave.values
            v["volume_l"] = v.get("volume_l", 12345) + 7
            v["flow_lh"] = 420
            v["energy_kwh"] = v.get("energy_kwh", 4711) + 1
            v["volume_10l"] = v.get("volume_10l", 12345) + 1


async def run_demo(stop: asyncio.Event, *, data_dir: Path, api_port: int, n_modbus: int, n_payg: int,
                   interval: float, console: Console) -> None:
    profiles = load_profiles()
    data_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        broker = stack.enter_context(Broker(data_dir / "mosquitto"))
        fleet = await stack.enter_async_context(SimFleet(profiles["generic"], n_modbus, seed=1, speedup=60.0,
                                                         meter_ids=[f"M-{i:04d}" for i in range(1, n_modbus + 1)]))
        mbus = mbus_fleet()
        mbus_server = await serve_tcp(mbus)
        stack.callback(mbus_server.close)
        mbus_port = mbus_server.sockets[0].getsockname()[1]
        cfg = demo_config(data_dir, api_port, fleet.port, broker.port, n_modbus, n_payg, interval, mbus_port)
        gateway = Gateway(cfg, profiles)
        payg = PaygFleet(broker.host, broker.port, n_payg, seed=1, interval=interval,
                         meter_ids=[f"P-{i:04d}" for i in range(1, n_payg + 1)], currency="KES")
        misbehaving = misbehave(fleet, payg)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gateway.run(stop), name="gateway")
            await gateway.started.wait()
            await stack.enter_async_context(payg)
            url = gateway.api_url
            key = await demo_key(gateway, "demo", Scope.READ)
            admin = await demo_key(gateway, "demo-admin", Scope.ADMIN)
            ticking = tg.create_task(_tick_mbus(mbus, interval), name="demo-mbus")
            stop_task = tg.create_task(_cancel_when(stop, ticking), name="demo-mbus-stop")
            del stop_task
            if _has(fleet, REGRESSING_METER):
                tg.create_task(_regress_later(fleet, _POLLS_BEFORE_REGRESSION * interval), name="demo-regression")
            console.print(f"\n[bold green]meter-gateway demo is running[/] — {n_modbus} Modbus meters on "
                          f"127.0.0.1:{fleet.port}, {n_payg} PAYG meters via mosquitto on 127.0.0.1:{broker.port}, "
                          f"{len(MBUS_METERS)} M-Bus water/heat meters on 127.0.0.1:{mbus_port}")
            console.print(f"  API docs:        {url}/docs", soft_wrap=True)
            console.print(f"  meters:          {url}/v1/meters", soft_wrap=True)
            console.print(f"  latest readings: {url}/v1/meters/M-0001/readings/latest", soft_wrap=True)
            console.print(f"  PAYG balance:    {url}/v1/meters/P-0001/balance", soft_wrap=True)
            console.print(f"  readiness:       {url}/readyz", soft_wrap=True)
            console.print(f"  status page:     {url}/status  (paste the admin key when it asks)", soft_wrap=True)
            console.print(f"  metrics:         {url}/metrics  (admin key)", soft_wrap=True)
            console.print(f"  read API key:    {key}", highlight=False, markup=False, soft_wrap=True)
            console.print(f"  admin API key:   {admin}  (demo only: an admin key can do everything)",
                          highlight=False, markup=False, soft_wrap=True)
            console.print(f"  try:             curl -H 'Authorization: Bearer {key}' {url}/v1/meters",
                          highlight=False, markup=False, soft_wrap=True)
            misbehaving.append(f"{LOW_BATTERY_METER} (M-Bus) reports power low in its status byte: an anomaly event")
            for line in misbehaving:
                console.print(f"  on purpose:      {line}", highlight=False, markup=False, soft_wrap=True)
            console.print(f"  data:            {data_dir.resolve()}", soft_wrap=True)
            console.print("Press Ctrl-C to stop.\n")


def misbehave(fleet: SimFleet, payg: PaygFleet) -> list[str]:
    """Set the demo's faults that hold from the start; say what each one shows."""
    shown = []
    if _has(fleet, SILENT_METER):
        fleet.set_fault(SILENT_METER, "timeout")
        shown.append(f"{SILENT_METER} never answers: comm_lost, its breaker and its errors on the status page")
    if _has(fleet, REGRESSING_METER):
        shown.append(f"{REGRESSING_METER}'s energy register goes backwards after a few polls: a VEE regression "
                     "(suspect readings, an anomaly event)")
    if LOW_CREDIT_METER in payg.meters:
        # Below the gateway's low-credit threshold (mqtt.low_credit_threshold, 5 KES); its customer tops up
        # now and then, as the simulator's households do.
        payg.meters[LOW_CREDIT_METER].balance = Decimal("3.00")
        shown.append(f"{LOW_CREDIT_METER} is at low credit: a low_credit event and the PAYG summary")
    return shown


def _has(fleet: SimFleet, meter_id: str) -> bool:
    return any(m.meter_id == meter_id for m in fleet.meters.values())


async def _cancel_when(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    await stop.wait()
    task.cancel()


async def _regress_later(fleet: SimFleet, after: float) -> None:
    await asyncio.sleep(after)
    fleet.set_fault(REGRESSING_METER, "regression")


async def demo_key(gateway: Gateway, name: str, scope: Scope) -> str:
    """A fresh API key in the demo's store (the embedded store is ready at once)."""
    await gateway.store_ready.wait()
    assert gateway.store is not None
    key, row = new_key(name, frozenset({scope}), datetime.now(UTC))
    await gateway.store.create_api_key(row)
    return key
