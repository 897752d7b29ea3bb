"""`meter-gateway run` supervises its two processes: SIGKILL the API process, then the core, each
on its own; each is started again, counted in /metrics and raised as an event, /readyz says the
core is gone while it is, and every reading the core had accepted (in its spool or the store) is
stored once in the end."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually
from tests.fixtures.ports import free_port
from tests.reliability.test_storage_sigkill import spooled

Row = tuple[str, str, str, float]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stored(db: Path) -> list[Row]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT meter_id, channel, ts, value FROM readings").fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet
    finally:
        con.close()
    return [(m, c, _iso(ts), v) for m, c, ts, v in rows]


def _iso(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


def child(supervisor: int, role: str) -> int | None:
    """The pid of the supervisor's child running `meter-gateway <role>`, if one runs."""
    try:
        kids = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return None
    for pid in kids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if role.encode() in argv[:5]:
            return int(pid)
    return None


def niceness(pid: int) -> int:
    # /proc/PID/stat: the command (in parentheses, maybe with spaces), then field 19 is the nice value.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


async def metric(api: httpx.AsyncClient, line: str) -> bool:
    try:
        got = await api.get("/metrics")
    except httpx.TransportError:
        return False
    return got.status_code == 200 and line in got.text


async def ready(api: httpx.AsyncClient) -> int | None:
    try:
        return (await api.get("/readyz")).status_code
    except httpx.TransportError:
        return None


async def test_a_killed_api_or_core_process_is_restarted_counted_and_loses_nothing(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 3, seed=5, speedup=60) as fleet:
        data = tmp_path / "data"
        port = free_port()
        config = tmp_path / "gw.toml"
        config.write_text(f"""
[gateway]
id = "restarts"
data_dir = "{data}"
[api]
port = {port}
[modbus]
default_interval = 0.2
[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
port = {fleet.port}
""" + "".join(f'[[meters]]\nmeter_id = "M-{i:04d}"\nendpoint = "sim"\nunit = {i}\n' for i in range(1, 4)))
        made = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "keys", "create", "-c",
                                                    str(config), "--name", "t", "--scope", "diag",
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(made.communicate(), 60)
        assert made.returncode == 0
        key = out.decode().strip().splitlines()[-1]
        store = data / "store.db"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                    stderr=asyncio.subprocess.PIPE)
        log = bytearray()

        async def collect() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(65536):
                log.extend(chunk)

        reader = asyncio.create_task(collect())
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                         headers={"Authorization": f"Bearer {key}"}) as api:
                await eventually(lambda: len(stored(store)) >= 7 * 3 * 2, timeout=60)
                await eventually(lambda: _is(ready(api), 200), timeout=60)

                # The API process: killed, started again on the same socket, counted, an event.
                old_api, first_core = child(proc.pid, "api"), child(proc.pid, "core")
                assert old_api is not None and first_core is not None
                assert niceness(old_api) - niceness(first_core) == 10  # [api] nice: the pollers first
                os.kill(old_api, signal.SIGKILL)
                await eventually(lambda: child(proc.pid, "api") not in (None, old_api), timeout=30)
                await eventually(lambda: metric(api, 'meter_gateway_process_restarts_total{process="api"} 1.0'),
                                 timeout=60)
                events = (await api.get("/v1/diag/events")).json()["items"]
                assert any(e["kind"] == "process_restarted" and "api process was killed by SIGKILL" in e["detail"]
                           for e in events), events

                # The core: killed mid-stream; what it had accepted is in its spool or the store.
                old_core = child(proc.pid, "core")
                assert old_core is not None
                os.kill(old_core, signal.SIGKILL)
                await eventually(lambda: not Path(f"/proc/{old_core}").exists(), timeout=30)
                accepted = set(spooled(data / "spool.db")) | set(stored(store))
                assert accepted
                await eventually(lambda: _is(ready(api), 503), timeout=30)  # said by the API meanwhile
                await eventually(lambda: child(proc.pid, "core") not in (None, old_core), timeout=30)
                await eventually(lambda: _is(ready(api), 200), timeout=60)
                await eventually(lambda: metric(api, 'meter_gateway_process_restarts_total{process="core"} 1.0'),
                                 timeout=60)
                await eventually(lambda: accepted <= set(stored(store)), timeout=60)
                more = len(stored(store))
                await eventually(lambda: len(stored(store)) > more, timeout=60)  # polling goes on
                events = (await api.get("/v1/diag/events")).json()["items"]
                assert any(e["kind"] == "process_restarted" and "core process was killed by SIGKILL" in e["detail"]
                           for e in events), events
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            await reader
            print(log.decode()[-6000:])
        text = log.decode()
        assert proc.returncode == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
    rows = stored(store)
    keys = [(m, c, ts) for m, c, ts, _ in rows]
    assert len(keys) == len(set(keys))  # nothing twice
    assert accepted <= set(rows)  # nothing acknowledged lost, values unchanged
    assert spooled(data / "spool.db") == []


async def _is(value: Awaitable[int | None], wanted: int) -> bool:
    return await value == wanted
