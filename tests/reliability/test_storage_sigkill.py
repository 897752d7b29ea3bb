"""SIGKILL a real `meter-gateway run` process mid-stream and start it again: every reading
it had accepted (committed to its spool or already in the store) is in TimescaleDB once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from datetime import UTC
from pathlib import Path

import httpx
import psycopg

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from storage.spool.codec import decode
from tests.fixtures.gateway import eventually
from tests.fixtures.ports import free_port

Row = tuple[str, str, str, float]


def spooled(path: Path) -> list[Row]:
    """Readings committed to the spool file (what the gateway had accepted, not yet stored)."""
    if not path.exists():
        return []
    con = sqlite3.connect(path)
    try:
        bodies = [r[0] for r in con.execute("SELECT body FROM spool ORDER BY id")]
    finally:
        con.close()
    return [(r.meter_id, r.channel.value, r.ts.astimezone(UTC).isoformat(), r.value)
            for body in bodies for r in decode(body).readings]  # fmt: skip


async def stored(dsn: str) -> list[Row]:
    try:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            cur = await conn.execute("SELECT meter_id, channel, ts, value FROM readings")
            return [(m, c, ts.isoformat(), v) for m, c, ts, v in await cur.fetchall()]
    except psycopg.errors.UndefinedTable:
        return []


async def test_sigkill_mid_stream_loses_nothing_and_writes_nothing_twice(tmp_path: Path, timescale_dsn: str) -> None:
    async with SimFleet(load_profiles()["generic"], 4, seed=11, speedup=60) as fleet:
        data = tmp_path / "data"
        api_port = free_port()
        config = tmp_path / "gw.toml"
        config.write_text(f"""
[gateway]
id = "sigkill"
data_dir = "{data}"
[api]
port = {api_port}
[storage]
backend = "timescale"
dsn = "{timescale_dsn}"
[modbus]
default_interval = 0.1
[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
port = {fleet.port}
""" + "".join(f'[[meters]]\nmeter_id = "M-{i:04d}"\nendpoint = "sim"\nunit = {i}\n' for i in range(1, 5)))
        argv = [sys.executable, "-m", "gateway", "run", "--config", str(config)]

        first = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.DEVNULL)
        try:
            await eventually(lambda: stored(timescale_dsn), timeout=60)
            await eventually(lambda: _len_at_least(stored(timescale_dsn), 7 * 4 * 5), timeout=60)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        # Accepted = committed to the spool or to the store at the moment of the kill.
        accepted = set(spooled(data / "spool.db")) | set(await stored(timescale_dsn))
        assert accepted

        second = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=5) as api:
                await eventually(lambda: _ready(api), timeout=60)
            await eventually(lambda: _covers(stored(timescale_dsn), accepted), timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err.decode()[-3000:]

    rows = await stored(timescale_dsn)
    keys = [(m, c, ts) for m, c, ts, _ in rows]
    assert len(keys) == len(set(keys))  # nothing twice
    assert accepted <= set(rows)  # nothing lost, values unchanged
    assert spooled(data / "spool.db") == []


async def _ready(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _len_at_least(rows: object, n: int) -> bool:
    return len(await rows) >= n  # type: ignore[misc]


async def _covers(rows: object, wanted: set[Row]) -> bool:
    return wanted <= set(await rows)  # type: ignore[misc]
