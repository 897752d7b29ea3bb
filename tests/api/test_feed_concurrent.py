"""The change feed while several writers commit concurrently and out of seq order: a client
that follows the cursor gets every reading exactly once (both stores)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from gateway.model import Batch, Channel, Kind, Reading
from storage.base import Store
from storage.open import open_store
from storage.sqlite.store import SqliteStore
from storage.timescale import rows as ts_rows
from storage.timescale.store import TimescaleStore
from tests.api.helpers import ok

T = datetime(2026, 6, 1, tzinfo=UTC)
BATCHES = 12
PER_BATCH = 25


def batch(writer: str, n: int) -> list[Reading]:
    return [Reading(f"F-{writer}", Channel.POWER, T + timedelta(minutes=n * PER_BATCH + i), float(i), Kind.INSTANTANEOUS)
            for i in range(PER_BATCH)]


async def _slow_pg(dsn: str, readings: list[Reading], hold: float) -> None:
    """A writer that takes its seqs, then waits before committing: later seqs commit first."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute("SELECT meter_gateway_feed_register()")
        await conn.cursor().executemany(
            f"INSERT INTO readings ({ts_rows.READING_IN}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [ts_rows.reading_row(r) for r in readings])
        await asyncio.sleep(hold)


def _slow_sqlite(path: str, readings: list[Reading], hold: float) -> None:
    from storage.sqlite import rows as sq_rows

    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.executemany(f"INSERT INTO readings ({sq_rows.READING_IN}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [sq_rows.reading_row(r) for r in readings])
        import time

        time.sleep(hold)
        con.execute("COMMIT")
    finally:
        con.close()


async def test_feed_misses_nothing_and_repeats_nothing_under_concurrent_writers(
        store: Store, api: httpx.AsyncClient) -> None:
    start = (await ok(api.get("/v1/readings/feed", params={"limit": 10_000})))["next_cursor"]
    others: list[Store] = []
    if isinstance(store, TimescaleStore):
        dsn = str(store._pool.conninfo)  # the same database, as another gateway would reach it
        others = [await open_store("timescale", dsn=dsn) for _ in range(2)]
    else:
        assert isinstance(store, SqliteStore)
        others = [await open_store("sqlite", sqlite_path=store.path) for _ in range(2)]
    written: list[Reading] = []
    done = asyncio.Event()

    async def writer(name: str, target: Store) -> None:
        for n in range(BATCHES):
            readings = batch(name, n)
            if n % 4 == 1:  # now and then a transaction that holds its seqs while others commit
                if isinstance(store, TimescaleStore):
                    await _slow_pg(dsn, readings, 0.15)
                else:
                    await asyncio.to_thread(_slow_sqlite, str(store.path), readings, 0.05)
            else:
                await target.write(Batch(readings=readings))
            written.extend(readings)
            await asyncio.sleep(0.005 * (n % 3))

    async def follow() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        cursor = start
        while True:
            finished = done.is_set()  # read before the page: the page after "done" sees every commit
            body = await ok(api.get("/v1/readings/feed", params={"after": cursor, "limit": 40}))
            got += body["items"]
            cursor = body["next_cursor"]
            if finished and not body["more"]:
                return got
            if not body["items"]:
                await asyncio.sleep(0.01)

    try:
        reader = asyncio.create_task(follow())
        async with asyncio.TaskGroup() as tg:
            for name, target in zip("ABC", [store, *others], strict=True):
                tg.create_task(writer(name, target))
        done.set()
        got = await asyncio.wait_for(reader, timeout=60)
    finally:
        for other in others:
            await other.close()

    seqs = [r["seq"] for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "a reading came twice or out of order"
    keys = sorted((r["meter_id"], r["ts"]) for r in got)
    expected = sorted((r.meter_id, r.ts.isoformat().replace("+00:00", "Z")) for r in written)
    assert len(written) == 3 * BATCHES * PER_BATCH
    assert keys == expected, "the feed skipped or repeated readings"
