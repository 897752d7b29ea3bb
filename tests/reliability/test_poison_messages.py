"""Issue 22 item 1 with a real `meter-gateway run` process and a real Mosquitto: each poison payload
(tests/poison.py; before, the first of them made the gateway exit 1, and the broker redelivered it
after every restart) and a command reply whose correlation id no store can hold are dead letters
with their reason, the good message after them is stored, the process keeps running, and after it
is killed and started again nothing comes back: every one of them was acknowledged."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from simulators.broker import Broker
from simulators.mqtt import publish_balance
from storage.base import Store
from tests.fixtures.gateway import broker_connected, eventually
from tests.fixtures.gateway import start_gateway_process as start
from tests.fixtures.ports import free_port
from tests.poison import POISON
from tests.storage.backends import open_backend

REPLY = b'{"correlation_id": "poison.\\u0000", "status": "ok"}'


def write_config(tmp_path: Path, broker: Broker, api_port: int, backend: str, dsn: str | None) -> Path:
    config = tmp_path / "gw.toml"
    storage = f'backend = "timescale"\ndsn = "{dsn}"' if backend == "timescale" else 'backend = "sqlite"'
    config.write_text(f"""
[gateway]
id = "poison"
data_dir = "{tmp_path / 'data'}"
[api]
port = {api_port}
[storage]
{storage}
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
client_id = "gw-poison"
currency = "KES"
[[meters]]
meter_id = "P-0001"
protocol = "mqtt"
payg = true
""")
    return config


async def running(proc: asyncio.subprocess.Process, api_port: int) -> bool:
    assert proc.returncode is None, f"the gateway exited with {proc.returncode}"
    return await broker_connected(api_port)


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_each_poison_message_is_a_dead_letter_and_the_next_good_one_is_stored(
        tmp_path: Path, mqtt_broker: Broker, request: pytest.FixtureRequest, backend: str) -> None:
    dsn = request.getfixturevalue("timescale_dsn") if backend == "timescale" else None
    api_port = free_port()
    config = write_config(tmp_path, mqtt_broker, api_port, backend, dsn)
    now = datetime.now(UTC).replace(microsecond=0)
    epoch = int(now.timestamp())
    host, port = mqtt_broker.host, mqtt_broker.port
    store: Store | None = None
    procs: list[asyncio.subprocess.Process] = []
    with (tmp_path / "gateway.log").open("wb") as log:
        try:
            proc = await start(config, log)
            procs.append(proc)
            await eventually(lambda: running(proc, api_port), timeout=60)
            for poison in POISON:
                await publish_balance(host, port, "P-0001", poison.payload(epoch))
            await publish_balance(host, port, "P-0001", "", topic="payg/{meter_id}/command/reply")
            await publish_balance(host, port, "P-0001", REPLY, topic="payg/{meter_id}/command/reply")
            await publish_balance(host, port, "P-0001", f'{{"ts": {epoch}, "balance": "12.50"}}')

            store = await open_backend(backend, dsn or str(tmp_path / "data" / "store.db"))

            async def good_stored(ts: datetime) -> bool:
                assert proc.returncode is None, f"the gateway exited with {proc.returncode}"
                assert store is not None
                return bool(await store.balances("P-0001", start=ts, end=ts + timedelta(seconds=1)))

            await eventually(lambda: good_stored(now), timeout=60)
            dead = await store.deadletters(limit=1000)
            assert proc.returncode is None

            # Killed and started again: the broker redelivers only what was never acknowledged.
            proc.kill()
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
            proc = await start(config, log)
            procs.append(proc)
            await eventually(lambda: running(proc, api_port), timeout=60)
            later = now + timedelta(seconds=1)
            await publish_balance(host, port, "P-0001", f'{{"ts": {epoch + 1}, "balance": "12.40"}}')
            await eventually(lambda: good_stored(later), timeout=60)
            await asyncio.sleep(0.5)  # a redelivered message would be behind it: give it time to show
            after = await store.deadletters(limit=1000)
            balances = await store.balances("P-0001", start=now - timedelta(hours=1), end=now + timedelta(hours=1))
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if store is not None:
                await store.close()
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
    got = sorted((d.reason, d.where, d.detail) for d in dead)
    replies = "payg/P-0001/command/reply"
    assert [(reason, where) for reason, where, _ in got] == sorted(
        [(p.reason, "payg/P-0001/balance") for p in POISON] + [("bad_text", replies), ("malformed_json", replies)])
    for poison in POISON:
        assert any(reason == poison.reason and poison.says in detail for reason, _, detail in got), poison.name
    assert len(after) == len(dead), "a message came back after the restart: it was never acknowledged"
    assert [(b.ts, b.balance) for b in balances] == [(now, Decimal("12.50")), (now + timedelta(seconds=1),
                                                                              Decimal("12.40"))]
    text = (tmp_path / "gateway.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
