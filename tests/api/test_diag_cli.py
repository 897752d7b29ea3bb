"""`meter-gateway status` run as a person runs it (a subprocess) against a running gateway."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import eventually, gateway_config
from tests.fixtures.ports import free_port


def meters_in(table: str) -> set[str]:
    """The meter ids in the first column of the printed tables."""
    cells = (line.strip("│┃ ").split(" ", 1)[0] for line in table.splitlines())
    return {cell for cell in cells if cell.startswith(("M-", "P-"))}


async def meter_gateway(*args: str, key: str | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("METER_GATEWAY_KEY", None)
    if key is not None:
        env["METER_GATEWAY_KEY"] = key
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_command(tmp_path: Path, mqtt_broker_stopped: Broker) -> None:
    async with SimFleet(load_profiles()["generic"], 3, seed=9, speedup=60) as fleet:
        fleet.set_fault("M-0002", "timeout")
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.3,
                             broker_port=mqtt_broker_stopped.port, payg_ids=["P-0001"])
        async with running(cfg) as (gw, api):
            key = (await make_key(gw))["Authorization"].removeprefix("Bearer ")

            async def lost() -> bool:
                body = (await api.get("/v1/diag/meters/M-0002", headers={"Authorization": f"Bearer {key}"})).json()
                return bool(body["state"] == "lost")

            await eventually(lost)
            # The broker is down: not ready (exit 1), and the table says why and which meters need a look.
            code, out, err = await meter_gateway("status", "--url", str(gw.api_url), key=key)
            assert code == 1, err
            assert "NOT READY (broker)" in out and "disconnected" in out
            assert "meters that need attention" in out
            attention = meters_in(out)
            assert attention == {"M-0002", "P-0001"}  # lost, and waiting for its first message
            m2 = next(line for line in out.splitlines() if "M-0002" in line)
            assert "lost" in m2 and "timeout" in m2 and "never" in m2
            assert "modbus sim" in out and "timeout" in out

            await asyncio.to_thread(mqtt_broker_stopped.start)
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected, timeout=60)
            code, out, err = await meter_gateway("status", "--url", str(gw.api_url), "--all", key=key)
            assert code == 0, err
            assert "READY" in out and "NOT READY" not in out
            listed = meters_in(out)
            assert listed == {"M-0001", "M-0002", "M-0003", "P-0001"}

            # The address can come from the configuration file.
            config_file = tmp_path / "gateway.toml"
            config_file.write_text(f'[api]\nhost = "0.0.0.0"\nport = {str(gw.api_url).rsplit(":", 1)[1]}\n')
            code, out, _ = await meter_gateway("status", "--config", str(config_file), key=key)
            assert code == 0 and "READY" in out

            code, out, err = await meter_gateway("status", "--url", str(gw.api_url))
            assert code == 2 and "401" in err and "diag scope" in err

    code, out, err = await meter_gateway("status", "--url", f"http://127.0.0.1:{free_port()}", key="x")
    assert code == 2 and "no gateway answers at" in err
