"""SPEC §7: `meter-gateway run` is SIGKILLed while PAYG meters publish, then started again.
Whatever was received but not yet committed is re-delivered by the broker (it was never acked),
whatever was committed to the spool is forwarded after the restart: compared with what the
simulator published, nothing is lost and nothing is stored twice."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from simulators.broker import Broker
from simulators.mqtt import PaygFleet
from tests.fixtures.gateway import broker_connected, eventually
from tests.fixtures.gateway import start_gateway_process as start
from tests.fixtures.ports import free_port

METERS = [f"P-{i:05d}" for i in range(1, 13)]


def stored(db: Path) -> tuple[int, dict[tuple[str, datetime], Decimal]]:
    """(row count, {(meter_id, ts): balance}) of the SQLite store; (0, {}) before it exists."""
    if not db.exists():
        return 0, {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT meter_id, ts, balance FROM balances").fetchall()
    except sqlite3.OperationalError:
        return 0, {}  # not migrated yet
    finally:
        con.close()
    # ts is microseconds since the epoch (storage/sqlite/schema), balance exact decimal text.
    got = {(m, datetime.fromtimestamp(us / 1e6, UTC).replace(microsecond=us % 1_000_000)): Decimal(b)
           for m, us, b in rows}
    return len(rows), got


def write_config(tmp_path: Path, broker: Broker, api_port: int) -> tuple[Path, Path]:
    data = tmp_path / "data"
    config = tmp_path / "gw.toml"
    config.write_text(f"""
[gateway]
id = "sigkill"
data_dir = "{data}"
[api]
port = {api_port}
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
client_id = "gw-sigkill"
currency = "KES"
""" + "".join(f'[[meters]]\nmeter_id = "{m}"\nprotocol = "mqtt"\npayg = true\n' for m in METERS))
    return config, data / "store.db"


async def test_sigkill_mid_stream_then_restart(tmp_path: Path, mqtt_broker: Broker) -> None:
    api_port = free_port()
    config, db = write_config(tmp_path, mqtt_broker, api_port)
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, len(METERS), seed=31, interval=0.03, meter_ids=METERS)
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = await start(config, log)
        second: asyncio.subprocess.Process | None = None
        try:
            # The session (and its subscription) must exist before the meters publish.
            await eventually(lambda: broker_connected(api_port), timeout=60)
            await fleet.start()
            await eventually(lambda: stored(db)[0] >= 150, timeout=60)
            proc.kill()  # SIGKILL: no shutdown, no drain, no clean disconnect
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
            killed_at = len(fleet.updates)
            # Meters go on publishing while the gateway is down: the broker keeps it in the session.
            await eventually(lambda: len(fleet.updates) >= killed_at + 150, timeout=60)
            second = await start(config, log)
            await eventually(lambda: len(fleet.updates) >= killed_at + 300, timeout=60)
            await fleet.stop()
            expected = dict(fleet.balances)
            await eventually(lambda: len(stored(db)[1]) >= len(expected), timeout=60)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 60) == 0
        finally:
            await fleet.stop()
            for p in (proc, second):
                if p is not None and p.returncode is None:
                    p.kill()
                    await p.wait()
    rows, got = stored(db)
    text = (tmp_path / "gateway.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert rows == len(got), "a balance update was stored twice"
    assert got == expected  # nothing lost, nothing extra, the same balances
