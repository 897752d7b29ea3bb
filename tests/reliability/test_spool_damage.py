"""SPEC §7: a damaged spool is salvaged, never fatal; a spool file removed under a running gateway is
noticed and loses nothing. Real gateways, real files, a real TimescaleDB that is stopped meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel, EventKind, Kind, Reading
from simulators.modbus import SimFleet
from storage.spool import Spool
from storage.spool.codec import encode
from storage.spool.salvage import check
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.timescale import PgCluster
from tests.reliability.test_storage_faults import Accepted, checksum, stored

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_the_gateway_starts_on_a_damaged_spool_and_stores_every_readable_batch(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    spool_path = data / "spool.db"
    async with Spool(spool_path):
        pass
    with contextlib.closing(sqlite3.connect(spool_path)) as raw, raw:
        raw.executemany("INSERT INTO spool (body, items, size, created) VALUES (?, 1, ?, ?)", [
            (body, len(body), T0.timestamp() + i) for i in range(2000) for body in [encode(Batch(readings=[
                Reading("M-0001", Channel.ENERGY_IMPORT, T0 + timedelta(minutes=i), float(i), Kind.CUMULATIVE,
                        received_at=T0)]))]])
        raw.execute("UPDATE spool SET body = ? WHERE id = 7", (b"\x00not json",))
    with spool_path.open("r+b") as f:  # and one page in the middle full of noise
        f.seek(spool_path.stat().st_size // 4096 // 2 * 4096)
        f.write(random.Random(3).randbytes(4096))
    before = check(spool_path)
    assert before.problem is not None and before.tally.lost > 0

    async with running_gateway(gateway_config(data)) as (gw, _):
        store = gw.store
        assert store is not None

        readable = before.tally.readable - len(before.tally.undecodable)

        async def forwarded() -> bool:
            return len(await store.readings("M-0001", start=T0, end=T0 + timedelta(days=5), limit=10_000)) >= readable

        await eventually(forwarded)
        await eventually(lambda: gw.spool is not None and gw.spool.stats().rows == 0)
        readings = await store.readings("M-0001", start=T0, end=T0 + timedelta(days=5), limit=10_000)
        dead = await store.deadletters(limit=10)
        [salvaged] = await store.events(kind=EventKind.SPOOL_SALVAGED)

    assert len(readings) == readable and {r.value for r in readings} < {float(i) for i in range(2000)}
    assert [(d.where, d.reason, d.payload) for d in dead] == [("spool row 7", "spool_undecodable", "\\x00not json")]
    assert f"recovered {before.tally.readable} batches" in salvaged.detail
    assert f"lost {before.tally.lost} batches" in salvaged.detail
    assert len([p for p in data.iterdir() if ".damaged-" in p.name]) == 1


async def test_a_spool_deleted_under_a_running_gateway_is_noticed_and_nothing_accepted_is_lost(
        tmp_path: Path, pg_cluster: PgCluster, timescale_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    accepted = Accepted()
    async with SimFleet(load_profiles()["generic"], 3, seed=11, speedup=60) as fleet:
        await fleet.stop()
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, backend="timescale",
                             dsn=timescale_dsn, interval=0.2, spool={"check_interval": 0.2})
        try:
            async with running_gateway(cfg) as (gw, _):
                assert gw.spool is not None and gw.forwarder is not None
                spool, forwarder = gw.spool, gw.forwarder
                spool.on_append.append(accepted)
                await eventually(lambda: gw.store_ready.is_set())
                await asyncio.to_thread(pg_cluster.stop, "fast")
                await fleet.start()
                # The store is down: what the meters send waits in the spool.
                await eventually(lambda: spool.stats().rows >= 20 and not forwarder.state.sink_up, timeout=60)

                for suffix in ("", "-wal", "-shm"):
                    spool.path.with_name(spool.path.name + suffix).unlink()
                waiting = spool.stats().rows

                # Noticed within the check interval: an error in the log, an event, a fresh spool at the path
                # that holds what was waiting (a crash now would lose nothing).
                await eventually(lambda: any(e.kind is EventKind.SPOOL_REPLACED for e in gw.health.events))
                assert any(r.levelno == logging.ERROR and "was removed while the gateway ran" in r.getMessage()
                           for r in caplog.records)
                with contextlib.closing(sqlite3.connect(spool.path)) as raw:
                    assert raw.execute("SELECT count(*) FROM spool").fetchone()[0] >= waiting

                await asyncio.to_thread(pg_cluster.start)
                await eventually(lambda: forwarder.state.sink_up and spool.stats().rows == 0, timeout=60)
                await fleet.stop()

                async def all_stored() -> bool:  # the polls queued before the stop are accepted after it
                    return set(accepted.rows) <= set((await stored(timescale_dsn))[2])

                await eventually(all_stored, timeout=60)
                assert gw.store is not None
                replaced = await gw.store.events(kind=EventKind.SPOOL_REPLACED)
        finally:
            if not pg_cluster.running:  # a failure above must not leave the session's cluster down
                await asyncio.to_thread(pg_cluster.start)

    total, distinct, rows = await stored(timescale_dsn)
    assert total == distinct  # nothing twice
    assert checksum(rows) == checksum(accepted.rows)  # nothing accepted lost
    assert len(replaced) == 1 and "removed while the gateway ran" in replaced[0].detail
