"""Storage under faults, with real servers: PostgreSQL stopped while readings flow, a
spool that reaches its limit, a batch the database refuses for one bad row."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel, EventKind, Kind, Reading
from simulators.modbus import SimFleet
from storage.spool import Spool
from storage.spool.forwarder import Forwarder
from storage.timescale.store import TimescaleStore
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.timescale import PgCluster

Key = tuple[str, str, datetime]


def checksum(rows: Iterable[tuple[str, str, datetime, float]]) -> tuple[int, str]:
    """(count, digest) of (meter, channel, ts, value) rows, independent of their order."""
    lines = sorted(f"{m}|{c}|{ts.astimezone(UTC).isoformat()}|{v!r}" for m, c, ts, v in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


async def stored(dsn: str) -> tuple[int, int, list[tuple[str, str, datetime, float]]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*), count(DISTINCT (meter_id, channel, ts)) FROM readings")
        total, distinct = await cur.fetchone() or (0, 0)
        cur = await conn.execute("SELECT meter_id, channel, ts, value FROM readings")
        return total, distinct, list(await cur.fetchall())


class Accepted:
    """Every reading the spool committed (an `on_append` observer): what must arrive."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, datetime, float]] = []
        self.events: list[EventKind] = []

    def __call__(self, _id: int, batch: Batch) -> None:
        self.rows += [(r.meter_id, r.channel.value, r.ts, r.value) for r in batch.readings]
        self.events += [e.kind for e in batch.events]


async def test_database_stopped_while_readings_flow_then_every_reading_arrives_once(
    tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str
) -> None:
    accepted = Accepted()
    async with SimFleet(load_profiles()["generic"], 3, seed=7, speedup=60) as fleet:
        await fleet.stop()  # no readings until the observer is attached
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, backend="timescale",
                             dsn=timescale_dsn, interval=0.2)  # fmt: skip
        async with running_gateway(cfg) as (gw, _):
            assert gw.spool is not None and gw.forwarder is not None
            spool, forwarder = gw.spool, gw.forwarder
            spool.on_append.append(accepted)
            await fleet.start()
            await eventually(lambda: len(accepted.rows) >= 7 * 3 * 2 and spool.stats().rows == 0, timeout=60)

            await asyncio.to_thread(pg_cluster.stop, "immediate")
            while_up = len(accepted.rows)
            # Keep ingesting while it is down: the spool grows, the forwarder waits.
            await eventually(lambda: len(accepted.rows) >= while_up + 7 * 3 * 4 and not forwarder.state.sink_up,
                             timeout=60)  # fmt: skip
            assert spool.stats().rows > 0

            await asyncio.to_thread(pg_cluster.start)
            await eventually(lambda: forwarder.state.sink_up and spool.stats().rows == 0, timeout=60)
        await fleet.stop()

    total, distinct, rows = await stored(timescale_dsn)
    assert total == distinct  # nothing twice
    assert checksum(rows) == checksum(accepted.rows)  # nothing lost, nothing changed


async def test_spool_limit_raises_the_event_holds_the_drivers_and_drops_nothing(
    tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str
) -> None:
    accepted = Accepted()
    limit = 65_536
    async with SimFleet(load_profiles()["generic"], 6, seed=9, speedup=60) as fleet:
        await fleet.stop()
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=6, backend="timescale",
                             dsn=timescale_dsn, interval=0.05, spool={"max_bytes": limit},
                             gateway={"queue_size": 10})  # fmt: skip
        async with running_gateway(cfg) as (gw, api):
            assert gw.spool is not None and gw.forwarder is not None
            spool, forwarder = gw.spool, gw.forwarder
            spool.on_append.append(accepted)
            await eventually(lambda: gw.store_ready.is_set())
            await asyncio.to_thread(pg_cluster.stop, "fast")
            await fleet.start()

            # Full: producers are held (back-pressure), and the spool stays at its limit.
            await eventually(lambda: spool.stats().full, timeout=60)
            assert EventKind.SPOOL_HIGH in accepted.events
            ready = (await api.get("/readyz")).json()
            assert ready["checks"]["spool"]["ok"] is False
            polls = sum(h.polls - h.failures for h in gw.pollers["sim"].health().values())
            await asyncio.sleep(1.0)
            stats = spool.stats()
            assert stats.full and stats.held >= 1
            assert stats.bytes <= limit + 4096  # at most the batch that crossed the line over
            # The pollers wait on the pipeline: at most the queue's worth of polls in a second,
            # not the 6 meters x 20 polls/s they would make unimpeded.
            assert sum(h.polls - h.failures for h in gw.pollers["sim"].health().values()) - polls < 6 * 20

            await asyncio.to_thread(pg_cluster.start)
            await eventually(lambda: not spool.stats().full and forwarder.state.sink_up, timeout=60)
            await fleet.stop()
            await eventually(lambda: spool.stats().rows == 0, timeout=60)

    total, distinct, rows = await stored(timescale_dsn)
    assert total == distinct
    assert checksum(rows) == checksum(accepted.rows)
    async with await TimescaleStore.open(timescale_dsn) as store:
        # Each crossing of the warning level (it may cross again while draining) stored once.
        crossings = accepted.events.count(EventKind.SPOOL_HIGH)
        assert crossings >= 1
        assert len(await store.events(kind=EventKind.SPOOL_HIGH)) == crossings


async def test_one_bad_row_goes_to_dead_letters_and_the_rest_lands_once(tmp_path: Path, timescale_dsn: str) -> None:
    """PostgreSQL refuses a NUL in text: the batch is split until that row is isolated.
    Replaying the same spooled batch (a crash before the spool delete) writes nothing twice."""
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    good = [Reading("M-1", Channel.ENERGY_IMPORT, t0 + timedelta(minutes=i), float(i), Kind.CUMULATIVE)
            for i in range(40)]  # fmt: skip
    bad = Reading("M-\x00", Channel.ENERGY_IMPORT, t0, 1.0, Kind.CUMULATIVE)
    batch = Batch(readings=[*good[:17], bad, *good[17:]])
    async with await TimescaleStore.open(timescale_dsn) as store, Spool(tmp_path / "spool.db") as spool:
        await store.migrate()
        forwarder = Forwarder(spool, store)
        for _ in range(2):  # the second round is the replay
            await spool.append(batch)
            await forwarder.forward_once()
            assert spool.stats().rows == 0

        assert len(await store.readings("M-1", start=t0, end=t0 + timedelta(days=1), limit=1000)) == 40
        [dead] = await store.deadletters()
        assert (dead.source, dead.reason, dead.where) == ("sink", "sink_rejected", "Reading")
        assert dead.meter_id == "M-\\x00" and "0x00" in dead.detail
        assert forwarder.state.deadlettered == 2  # refused in both rounds, stored once
