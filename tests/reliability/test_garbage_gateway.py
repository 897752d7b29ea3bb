"""Issue 19 items 1-2 as the issue found them: an independent publisher sends every kind of garbage
(tests/garbage.py) interleaved with good balance messages to a real `meter-gateway run` process
through a real Mosquitto, writing to SQLite or TimescaleDB. Counted by kind (each kind is its own
configured meter): each garbage message is one dead letter with normalise's reason, none is
`sink_rejected`, no garbage row is stored, and every good message is."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from simulators.broker import Broker
from simulators.mqtt.publisher import PaygPublisher
from storage.base import Store
from tests.fixtures.gateway import broker_connected, eventually
from tests.fixtures.gateway import start_gateway_process as start
from tests.fixtures.ports import free_port
from tests.garbage import GARBAGE
from tests.storage.backends import open_backend

KINDS = {f"G-{i:02d}": g for i, g in enumerate(GARBAGE)}
UNKNOWN = "NOPE-1"


def write_config(tmp_path: Path, broker: Broker, api_port: int, backend: str, dsn: str | None) -> Path:
    config = tmp_path / "gw.toml"
    storage = f'backend = "timescale"\ndsn = "{dsn}"' if backend == "timescale" else 'backend = "sqlite"'
    meters = "".join(f'[[meters]]\nmeter_id = "{m}"\nprotocol = "mqtt"\npayg = true\n' for m in [*KINDS, "P-GOOD"])
    config.write_text(f"""
[gateway]
id = "garbage"
data_dir = "{tmp_path / 'data'}"
[api]
port = {api_port}
[storage]
{storage}
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
client_id = "gw-garbage"
currency = "KES"
{meters}""")
    return config


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_garbage_beside_good_messages_is_dead_lettered_by_the_gateway_never_stored_nor_left_to_the_store(
        tmp_path: Path, mqtt_broker: Broker, request: pytest.FixtureRequest, backend: str) -> None:
    dsn = request.getfixturevalue("timescale_dsn") if backend == "timescale" else None
    api_port = free_port()
    config = write_config(tmp_path, mqtt_broker, api_port, backend, dsn)
    now = datetime.now(UTC).replace(microsecond=0)
    epoch = int(now.timestamp()) - 600
    good = {Decimal(f"{i}.25"): epoch + i for i in range(len(KINDS))}
    store: Store | None = None
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = await start(config, log)
        try:
            await eventually(lambda: broker_connected(api_port), timeout=60)
            async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as publisher:
                for (meter, kind), (amount, ts) in zip(KINDS.items(), good.items(), strict=True):
                    await publisher.publish(f"payg/{UNKNOWN if kind.unknown_meter else meter}/balance",
                                            kind.payload(epoch))
                    await publisher.publish("payg/P-GOOD/balance", f'{{"ts": {ts}, "balance": "{amount}"}}'.encode())
            store = await open_backend(backend, dsn or str(tmp_path / "data" / "store.db"))

            async def settled() -> bool:
                assert proc.returncode is None, f"the gateway exited with {proc.returncode}"
                assert store is not None
                # Each good message follows a garbage one on the same session: the last one stored, all are in.
                stored = await store.balances("P-GOOD", start=now - timedelta(hours=1), end=now)
                return len(stored) == len(good)

            await eventually(settled, timeout=90)
            dead = await store.deadletters(limit=1000)
            stored = {m: b for m in KINDS if (b := await store.latest_balance(m)) is not None}
            balances = await store.balances("P-GOOD", start=now - timedelta(hours=1), end=now)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if store is not None:
                await store.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [d for d in dead if d.reason == "sink_rejected"] == []
    assert {KINDS[m].name: str(b.balance)[:20] for m, b in stored.items()} == {}
    by_kind = Counter((d.meter_id or d.where.split("/")[1], d.reason) for d in dead)
    assert by_kind == Counter({(UNKNOWN if k.unknown_meter else m, k.reason): 1 for m, k in KINDS.items()})
    assert sorted(b.balance for b in balances) == sorted(good)
    text = (tmp_path / "gateway.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
