"""SIGTERM stops a real `meter-gateway run` process cleanly: exit 0, the spool drained
into the store, every accepted reading there once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually
from tests.fixtures.ports import free_port


def count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet
    finally:
        con.close()


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 3, seed=3, speedup=60) as fleet:
        data = tmp_path / "data"
        config = tmp_path / "gw.toml"
        config.write_text(f"""
[gateway]
id = "sigterm"
data_dir = "{data}"
[api]
port = {free_port()}
[modbus]
default_interval = 0.2
[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
port = {fleet.port}
""" + "".join(f'[[meters]]\nmeter_id = "M-{i:04d}"\nendpoint = "sim"\nunit = {i}\n' for i in range(1, 4)))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                    stderr=asyncio.subprocess.PIPE)
        store = data / "store.db"
        try:
            await eventually(lambda: count(store, "SELECT COUNT(*) FROM readings") >= 7 * 3 * 3, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        log = stderr.decode()
        assert proc.returncode == 0, log
        assert "Traceback" not in log
        assert "stopped" in log
        assert count(data / "spool.db", "SELECT COUNT(*) FROM spool") == 0
        rows = count(store, "SELECT COUNT(*) FROM readings")
        keys = count(store, "SELECT COUNT(*) FROM (SELECT DISTINCT meter_id, channel, ts FROM readings)")
        assert rows == keys and rows % 7 == 0  # whole polls only, never a key twice
