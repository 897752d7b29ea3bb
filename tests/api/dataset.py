"""Real data for the API tests, made once per session: a gateway reads simulated Modbus
meters (one of them regressing) and PAYG meters over a private Mosquitto into an embedded
store for a few seconds. Each test gets a copy: of the SQLite file, or a PostgreSQL
database made from a template filled with the same rows."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import config_meters
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import PaygFleet
from storage.sqlite.store import SqliteStore
from storage.timescale.store import TimescaleStore
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.timescale import PgCluster

MODBUS = ["M-0001", "M-0002", "M-0003", "M-0004"]  # consumers C-1 .. C-4; M-0004 regresses
PAYG = ["P-0001", "P-0002", "P-0003"]
FAR = timedelta(days=3650)


@dataclass(frozen=True)
class Dataset:
    sqlite: Path  # a migrated store with the data; copy it before use
    config: GatewayConfig
    synced_at: datetime  # when the gateway registered the configured meters


async def _enough(store: SqliteStore) -> bool:
    now = datetime.now(UTC)
    for meter_id in MODBUS[:3]:
        rows = await store.readings(meter_id, start=now - FAR, end=now + FAR, channel=Channel.ENERGY_IMPORT)
        if len(rows) < 12:
            return False
    for meter_id in PAYG:
        if len(await store.balances(meter_id, start=now - FAR, end=now + FAR)) < 4:
            return False
    suspect = await store.readings("M-0004", start=now - FAR, end=now + FAR, channel=Channel.ENERGY_IMPORT)
    return any(r.status.value == "suspect" for r in suspect)


async def collect(root: Path) -> Dataset:
    """Run the gateway against the simulators until every meter has enough history."""
    with Broker(root / "mosquitto") as broker:
        async with SimFleet(load_profiles()["generic"], len(MODBUS), seed=7, speedup=600, meter_ids=MODBUS) as fleet:
            cfg = gateway_config(root / "gw", modbus_port=fleet.port, n_modbus=len(MODBUS), broker_port=broker.port,
                                 payg_ids=PAYG, interval=0.2)
            synced_at = datetime.now(UTC)
            async with running_gateway(cfg, api_key=False) as (gw, _), \
                    PaygFleet(broker.host, broker.port, len(PAYG), seed=3, interval=0.2, meter_ids=PAYG,
                              currency="KES"):
                await eventually(lambda: gw.store_ready.is_set())
                await asyncio.sleep(1.0)  # a few clean reads first, then a regression
                fleet.set_fault("M-0004", "regression", regression_kwh=5.0)
                assert isinstance(gw.store, SqliteStore)
                store = gw.store
                await eventually(lambda: _enough(store), timeout=60)
    return Dataset(root / "gw" / "store.db", cfg, synced_at)


async def fill_postgres(data: Dataset, dsn: str) -> None:
    """The same meters, assignments, readings (in seq order), balances and events in PostgreSQL."""
    now = datetime.now(UTC)
    async with await SqliteStore.open(data.sqlite) as source, \
            await TimescaleStore.open(dsn, chunk_interval="1 day") as target:
        await target.migrate()
        await target.sync_meters(config_meters(data.config), at=data.synced_at)
        after, readings = 0, []
        while page := (await source.feed(after=after, limit=10_000)).items:
            readings += page
            after = page[-1].seq or after
        balances = [b for m in PAYG for b in await source.balances(m, start=now - FAR, end=now + FAR, limit=100_000)]
        events = [e.event for e in await source.events_page(limit=100_000)]
        await target.write(Batch(readings=readings, balances=balances, events=events))


def build(root: Path, cluster: PgCluster) -> tuple[Dataset, str]:
    """(the dataset, the name of a PostgreSQL template database holding it)."""
    data = asyncio.run(collect(root))
    template = cluster.create_database()
    asyncio.run(fill_postgres(data, cluster.dsn(template)))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE true')
        # A closed pool's server sessions may take a moment to exit; a template must have none.
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [template])
    return data, template


def copy_sqlite(data: Dataset, where: Path) -> Path:
    """A copy of the dataset's SQLite file (and its WAL, if the last close left one)."""
    copy = where / "store.db"
    for suffix in ("", "-wal"):
        source = data.sqlite.with_name(data.sqlite.name + suffix)
        if source.exists():
            shutil.copy(source, copy.with_name(copy.name + suffix))
    return copy


def copy_postgres(cluster: PgCluster, template: str) -> str:
    """A new database made from the template; the caller drops it (cluster.drop_database)."""
    name = f"{template}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except psycopg.errors.ObjectInUse:
                # A session of the template (the filler's, or a previous copy's) is still
                # exiting; PostgreSQL gives it no way to be waited for.
                if attempt == 49:
                    raise
                time.sleep(0.1)
    return name
