"""Under `meter-gateway run` the API runs in its own process and asks the core over its control
socket: the technicians' routes answer as they do with everything in one process
(`run --one-process`) — the same statuses and the same fields, errors included (a meter that
does not exist, a meter that times out, a bus that is not configured, PAYG commands off)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually
from tests.fixtures.ports import free_port

ROUTES: list[tuple[str, str]] = [
    ("GET", "/v1/diag/status"),
    ("GET", "/v1/diag/meters"),
    ("GET", "/v1/diag/meters/M-0001"),
    ("GET", "/v1/diag/meters/M-0404"),
    ("GET", "/v1/diag/meters/M-0001/payloads"),
    ("POST", "/v1/diag/meters/M-0001/poll"),
    ("POST", "/v1/diag/meters/M-0002/poll"),
    ("GET", "/v1/diag/endpoints/sim/registers?unit=1&address=0&count=4&function=input"),
    ("GET", "/v1/diag/endpoints/nowhere/registers?unit=1&address=0"),
    ("GET", "/v1/diag/events"),
    ("GET", "/v1/diag/deadletters"),
    ("GET", "/v1/fleet/summary"),
    ("GET", "/status/panel"),
]


def shape(resp: httpx.Response) -> tuple[int, Any]:
    """A route's answer without its values (which move between two runs): status and fields."""
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return resp.status_code, resp.headers.get("content-type")
    body = resp.json()
    if isinstance(body, dict):
        return resp.status_code, sorted(body)
    return resp.status_code, type(body).__name__


async def answers(config: Path, port: int, key: str, *extra: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                *extra, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            async def polled() -> bool:
                try:
                    got = await api.get("/v1/diag/meters/M-0001")
                except httpx.TransportError:
                    return False
                return got.status_code == 200 and got.json()["last_success"] is not None

            await eventually(polled, timeout=60)
            got: dict[str, Any] = {}
            for method, path in ROUTES:
                got[f"{method} {path}"] = shape(await api.request(method, path))
                await asyncio.sleep(0.6)  # within the per-bus rate of raw reads
            command = await api.post("/v1/meters/M-0001/commands", json={"kind": "disconnect"})
            got["POST /v1/meters/M-0001/commands"] = shape(command)
            metrics = (await api.get("/metrics")).text
            got["metrics"] = "meter_gateway_polls_total" in metrics and "meter_gateway_api_refused_total" in metrics
            return got
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-3000:]


async def test_the_api_in_its_own_process_answers_as_in_one(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=9, speedup=60) as fleet:
        fleet.meters[2].fault = "timeout"
        port = free_port()
        config = tmp_path / "gw.toml"
        config.write_text(f"""
[gateway]
id = "split"
data_dir = "{tmp_path / 'data'}"
[api]
port = {port}
[modbus]
default_interval = 0.5
[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
port = {fleet.port}
timeout = 0.3
""" + "".join(f'[[meters]]\nmeter_id = "M-{i:04d}"\nendpoint = "sim"\nunit = {i}\n' for i in (1, 2)))
        made = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "keys", "create", "-c",
                                                    str(config), "--name", "t", "--scope", "admin",
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(made.communicate(), 60)
        assert made.returncode == 0
        key = out.decode().strip().splitlines()[-1]

        split = await answers(config, port, key)
        single = await answers(config, port, key, "--one-process")

    assert split == single
    # And they are the answers they should be, not two alike failures.
    assert split["GET /v1/diag/meters/M-0001"][0] == 200
    assert split["GET /v1/diag/meters/M-0404"][0] == 404
    assert split["POST /v1/diag/meters/M-0001/poll"][0] == 200
    assert split["POST /v1/diag/meters/M-0002/poll"][0] >= 500  # the meter times out: a DriverError, said
    assert split["GET /v1/diag/endpoints/sim/registers?unit=1&address=0&count=4&function=input"][0] == 200
    assert split["GET /v1/diag/endpoints/nowhere/registers?unit=1&address=0"][0] == 404
    assert split["POST /v1/meters/M-0001/commands"][0] in (404, 409)
    assert split["metrics"] is True
