"""Issue 19 item 1's last two gaps, through a real gateway (in-process, real Mosquitto, SQLite and
TimescaleDB): the installation floor is the registry's `installed_at`, which the account system sets
through the API after the gateway started, and a time a meter stamps far ahead of receipt is no data
for any kind of sample ([plausibility] max_ahead).

A PAYG meter (MQTT) and a coded-values meter (the test-only p1file driver, RawObjects with the
meter's clock) get an installation date through `PATCH /v1/meters/{id}`; once the gateway's floors
hold it, a balance and a telegram stamped before it, and a telegram stamped in the year 2999, are
dead letters with reason implausible_ts naming field, value and bound; only the good ones are
stored. On the code before, the floor was the config's alone and the far-future telegram was stored
(flagged future_ts by VEE).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config.load import parse_config
from gateway.model import DeadLetter
from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.mqtt.publisher import PaygPublisher
from storage.base import Store
from storage.keys import Scope, new_key
from tests.architecture import p1file
from tests.architecture.test_registry import OBJECT_MAP, REGISTRY
from tests.fixtures.gateway import broker_connected, eventually
from tests.fixtures.gateway import start_gateway_process as start
from tests.fixtures.ports import free_port
from tests.storage.backends import open_backend

CONFIG = """\
[gateway]
id = "floor-test"
data_dir = "{data}"

[api]
host = "127.0.0.1"
port = 0

[storage]
{storage}

[plausibility]
installed_refresh = 0.2

[mqtt]
enabled = true
host = "{host}"
port = {port}
client_id = "gw-floor-{backend}"
currency = "KES"

[p1file]
folder = "{folder}"
objects = "{objects}"

[[meters]]
meter_id = "P-1"
protocol = "mqtt"
payg = true

[[meters]]
meter_id = "P1-1"
protocol = "p1file"
file = "p1-1.txt"
"""


@contextlib.asynccontextmanager
async def running(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway running and subscribed at the broker, with a client that holds an admin key."""
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await eventually(lambda: task.done() or (gw.store_ready.is_set() and gw.api_url is not None), timeout=60)
        if task.done():
            task.result()
        key, row = new_key("tests", frozenset({Scope.ADMIN}), datetime.now(UTC))
        assert gw.store is not None and gw.api_url is not None
        await gw.store.create_api_key(row)
        async with httpx.AsyncClient(base_url=gw.api_url, timeout=10,
                                     headers={"Authorization": f"Bearer {key}"}) as client:

            async def subscribed() -> bool:
                return bool((await client.get("/readyz")).json()["checks"].get("broker", {}).get("ok"))

            await eventually(subscribed, timeout=60)
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def config(tmp_path: Path, broker: Broker, backend: str, dsn: str | None) -> str:
    folder = tmp_path / "telegrams"
    folder.mkdir()
    (tmp_path / "map.toml").write_text(OBJECT_MAP)
    storage = f'backend = "timescale"\ndsn = "{dsn}"' if backend == "timescale" else 'backend = "sqlite"'
    return CONFIG.format(data=tmp_path / "gw", storage=storage, host=broker.host, port=broker.port, backend=backend,
                         folder=folder, objects=tmp_path / "map.toml")


def telegram(at: datetime, watts: int) -> str:
    return f"{p1file.CLOCK} {at.isoformat()}\n1-0:1.7.0 {watts}\n"


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_a_floor_set_through_the_api_and_far_future_times_are_dead_letters_before_the_spool(
        tmp_path: Path, mqtt_broker: Broker, request: pytest.FixtureRequest, backend: str) -> None:
    dsn = request.getfixturevalue("timescale_dsn") if backend == "timescale" else None
    cfg, profiles = parse_config(config(tmp_path, mqtt_broker, backend, dsn), "floor.toml", env={},
                                 drivers=REGISTRY)
    gw = Gateway(cfg, profiles, drivers=REGISTRY)
    now = datetime.now(UTC).replace(microsecond=0)
    installed = now - timedelta(days=1)
    before, good, far = installed - timedelta(hours=6), now - timedelta(hours=1), datetime(2999, 1, 1, tzinfo=UTC)
    async with running(gw) as api:
        store: Store | None = gw.store
        assert store is not None and gw.pipeline is not None
        # The account system sets the installation dates after the gateway started.
        for meter in ("P-1", "P1-1"):
            resp = await api.patch(f"/v1/meters/{meter}", json={"installed_at": installed.isoformat()})
            assert resp.status_code == 200, resp.text
        normaliser = gw.pipeline.normaliser
        await eventually(lambda: all(normaliser.bounds.floor(m) == installed for m in ("P-1", "P1-1")))

        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as publisher:
            await publisher.publish("payg/P-1/balance", f'{{"ts": "{before.isoformat()}", "balance": 7}}'.encode())
            await publisher.publish("payg/P-1/balance", f'{{"ts": "{good.isoformat()}", "balance": 8}}'.encode())

        async def dead(meter: str, n: int) -> list[DeadLetter]:
            assert store is not None
            found = await store.deadletters(meter_id=meter)
            return found if len(found) >= n else []

        # The driver reads a telegram file when it changes: one at a time, each seen through.
        telegrams = tmp_path / "telegrams" / "p1-1.txt"
        telegrams.write_text(telegram(before, 1500))
        await eventually(lambda: dead("P1-1", 1))
        telegrams.write_text(telegram(far, 1600))
        await eventually(lambda: dead("P1-1", 2))
        telegrams.write_text(telegram(good, 1700))

        async def stored() -> tuple[list[Any], list[Any]] | None:
            assert store is not None
            balances = await store.balances("P-1", start=installed - timedelta(days=2), end=now + timedelta(hours=1))
            readings = await store.readings("P1-1", start=datetime(2010, 1, 1, tzinfo=UTC), end=far + timedelta(1))
            return (balances, readings) if balances and readings else None

        balances, readings = await eventually(stored)
        dead_payg = await store.deadletters(meter_id="P-1")
        dead_p1 = await store.deadletters(meter_id="P1-1")
    assert [(b.ts, str(b.balance)) for b in balances] == [(good, "8")]
    assert [(r.ts, r.value) for r in readings] == [(good, 1.7)]
    assert [(d.reason, d.detail) for d in dead_payg] == [(
        "implausible_ts", f"topic payg/P-1/balance: field 'ts' {before.isoformat()} is before {installed.isoformat()} "
                          "(the meter's installed_at)")]
    by_detail = sorted((d.reason, d.detail) for d in dead_p1)
    assert [reason for reason, _ in by_detail] == ["implausible_ts", "implausible_ts"]
    assert by_detail[0][1] == f"power: ts {before.isoformat()} is before {installed.isoformat()} (the meter's installed_at)"
    assert by_detail[1][1].startswith(f"power: ts {far.isoformat()} is more than 86400 s after receipt (")
    assert by_detail[1][1].endswith(") ([plausibility] max_ahead)")


async def test_a_floor_the_api_process_sets_reaches_the_core_process(tmp_path: Path, mqtt_broker: Broker) -> None:
    """`meter-gateway run`: the API is a process of its own and writes the date to the store; the
    core reads it there (its log says when) and dead-letters a balance stamped before it."""
    port = free_port()
    config = tmp_path / "gw.toml"
    config.write_text(f"""
[gateway]
id = "floor-process"
data_dir = "{tmp_path / 'data'}"
[api]
port = {port}
[plausibility]
installed_refresh = 0.2
[mqtt]
enabled = true
host = "{mqtt_broker.host}"
port = {mqtt_broker.port}
client_id = "gw-floor-process"
currency = "KES"
[[meters]]
meter_id = "P-1"
protocol = "mqtt"
payg = true
""")
    made = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "keys", "create", "-c", str(config),
                                                "--name", "t", "--scope", "write", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(made.communicate(), 60)
    assert made.returncode == 0
    key = out.decode().strip().splitlines()[-1]
    now = datetime.now(UTC).replace(microsecond=0)
    installed = now - timedelta(days=1)
    before, good = installed - timedelta(hours=6), now - timedelta(hours=1)
    log_path = tmp_path / "gateway.log"
    store: Store | None = None
    with log_path.open("wb") as log:
        proc = await start(config, log)
        try:
            await eventually(lambda: broker_connected(port), timeout=60)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                         headers={"Authorization": f"Bearer {key}"}) as api:
                resp = await api.patch("/v1/meters/P-1", json={"installed_at": installed.isoformat()})
                assert resp.status_code == 200, resp.text
            # The core says when its floors hold the date (it is not told: it reads the store).
            said = f"installation floors changed: P-1 {installed.isoformat()} (was none)"
            await eventually(lambda: said in log_path.read_text(errors="replace"), timeout=60)
            async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as publisher:
                await publisher.publish("payg/P-1/balance", f'{{"ts": "{before.isoformat()}", "balance": 7}}'.encode())
                await publisher.publish("payg/P-1/balance", f'{{"ts": "{good.isoformat()}", "balance": 8}}'.encode())
            store = await open_backend("sqlite", str(tmp_path / "data" / "store.db"))

            async def balances() -> list[Any]:
                assert store is not None
                return await store.balances("P-1", start=installed - timedelta(days=2), end=now)

            stored = await eventually(balances, timeout=60)
            dead = await store.deadletters(meter_id="P-1")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if store is not None:
                await store.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [(b.ts, str(b.balance)) for b in stored] == [(good, "8")]
    assert [(d.reason, d.detail) for d in dead] == [(
        "implausible_ts", f"topic payg/P-1/balance: field 'ts' {before.isoformat()} is before {installed.isoformat()} "
                          "(the meter's installed_at)")]
    assert "Traceback" not in log_path.read_text(errors="replace")
