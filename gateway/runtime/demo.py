"""`meter-gateway demo`: simulated meters, a private broker, the embedded store and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.config.profiles import load_profiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import PaygFleet
from storage.keys import Scope, new_key

log = logging.getLogger(__name__)


def demo_config(data_dir: Path, api_port: int, modbus_port: int, broker_port: int, n_modbus: int,
                n_payg: int, interval: float) -> GatewayConfig:
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
    return GatewayConfig.model_validate(doc)


async def run_demo(stop: asyncio.Event, *, data_dir: Path, api_port: int, n_modbus: int, n_payg: int,
                   interval: float, console: Console) -> None:
    profiles = load_profiles()
    data_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        broker = stack.enter_context(Broker(data_dir / "mosquitto"))
        fleet = await stack.enter_async_context(SimFleet(profiles["generic"], n_modbus, seed=1, speedup=60.0,
                                                         meter_ids=[f"M-{i:04d}" for i in range(1, n_modbus + 1)]))
        cfg = demo_config(data_dir, api_port, fleet.port, broker.port, n_modbus, n_payg, interval)
        gateway = Gateway(cfg, profiles)
        payg = PaygFleet(broker.host, broker.port, n_payg, seed=1, interval=interval,
                         meter_ids=[f"P-{i:04d}" for i in range(1, n_payg + 1)], currency="KES")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(gateway.run(stop), name="gateway")
            await gateway.started.wait()
            await stack.enter_async_context(payg)
            url = gateway.api_url
            key = await demo_key(gateway)
            console.print(f"\n[bold green]meter-gateway demo is running[/] — {n_modbus} Modbus meters on "
                          f"127.0.0.1:{fleet.port}, {n_payg} PAYG meters via mosquitto on 127.0.0.1:{broker.port}")
            console.print(f"  API docs:        {url}/docs")
            console.print(f"  meters:          {url}/v1/meters")
            console.print(f"  latest readings: {url}/v1/meters/M-0001/readings/latest")
            console.print(f"  PAYG balance:    {url}/v1/meters/P-0001/balance")
            console.print(f"  readiness:       {url}/readyz")
            console.print(f"  read API key:    {key}", highlight=False, markup=False)
            console.print(f"  try:             curl -H 'Authorization: Bearer {key}' {url}/v1/meters",
                          highlight=False, markup=False)
            console.print(f"  data:            {data_dir.resolve()}")
            console.print("Press Ctrl-C to stop.\n")


async def demo_key(gateway: Gateway) -> str:
    """A fresh `read` API key in the demo's store (the embedded store is ready at once)."""
    await gateway.store_ready.wait()
    assert gateway.store is not None
    key, row = new_key("demo", frozenset({Scope.READ}), datetime.now(UTC))
    await gateway.store.create_api_key(row)
    return key
