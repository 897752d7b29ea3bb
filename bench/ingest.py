"""Ingest and query benchmark of the storage stage (issue 5). Not a test: prints a table.

    .venv/bin/python bench/ingest.py            # full: 1 M ingested rows, 10.5 M-row query store
    .venv/bin/python bench/ingest.py --quick    # about a minute: 100 k ingested, ~1 M-row query store

Ingest (TimescaleDB on a private cluster, fsync on, never the machine's own server):
  bare COPY     psycopg binary COPY of the rows into a hypertable with the same unique
                index: the limit, 100 %.
  store.write   the store's idempotent path (binary COPY in a savepoint, staging fallback).
  staging only  the obvious COPY -> staging -> INSERT ... ON CONFLICT, for comparison.
  pipeline      readings through Spool.append (SQLite, synchronous=FULL) -> Forwarder ->
                store.write, measured until the last row is committed in the database.
  replay        the same rows written a second time: all duplicates, nothing written.
The same for the embedded SQLite store (no bare-COPY equivalent: its limit is a plain
executemany INSERT without conflict handling).

Queries on a store of M meters x 3 channels x a year of 15-minute reads (10.5 M rows for
100 meters), p50 / p99 over repeated calls with random meters: latest readings, one
meter's month of one channel (2,880 reads), a year of daily consumption, a billing read,
a feed page of 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.machine import speed
from gateway.model import Batch, Channel, Kind, Quality, Reading, Source, Status
from gateway.runtime import eventloop
from storage.base import Store
from storage.spool import Spool
from storage.spool.forwarder import Forwarder
from storage.sqlite.store import SqliteStore
from storage.timescale import rows as ts_rows
from storage.timescale.store import TimescaleStore
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster, _make_root

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
CHANNELS = (Channel.ENERGY_IMPORT, Channel.POWER, Channel.VOLTAGE_L1)
BATCH = 5000


def make_readings(n: int, meters: int, start: datetime = T0) -> list[Reading]:
    """n readings: `meters` meters x 3 channels, one 15-minute step at a time."""
    out = []
    per_step = meters * len(CHANNELS)
    for i in range(n):
        step, rest = divmod(i, per_step)
        m, c = divmod(rest, len(CHANNELS))
        ch = CHANNELS[c]
        kind = Kind.CUMULATIVE if ch is Channel.ENERGY_IMPORT else Kind.INSTANTANEOUS
        value = step * 0.25 + m if kind is Kind.CUMULATIVE else 1.0 + (step % 7)
        out.append(Reading(f"M-{m:05d}", ch, start + step * STEP, value, kind, received_at=start + step * STEP))
    return out


def batches(readings: list[Reading], size: int = BATCH) -> list[Batch]:
    return [Batch(readings=readings[i : i + size]) for i in range(0, len(readings), size)]


# -- ingest -----------------------------------------------------------------------------
async def bare_copy(dsn: str, readings: list[Reading]) -> float:
    """rows/s of a bare binary COPY into a copy of the readings hypertable (same indexes)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE bare (LIKE readings INCLUDING DEFAULTS INCLUDING INDEXES)")
        await conn.execute("SELECT create_hypertable('bare', by_range('ts', INTERVAL '7 days'),"
                           " create_default_indexes => false)")  # fmt: skip
        started = time.perf_counter()
        for b in batches(readings):
            async with conn.transaction(), conn.cursor().copy(
                f"COPY bare ({ts_rows.READING_IN}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(ts_rows.READING_TYPES)
                for r in b.readings:
                    await copy.write_row(ts_rows.reading_row(r))
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bare")
    return len(readings) / elapsed


async def store_write(store: Store, readings: list[Reading], **kw: Any) -> tuple[float, int]:
    started = time.perf_counter()
    inserted = 0
    for b in batches(readings):
        inserted += (await store.write(b, **kw)).readings_inserted
    return len(readings) / (time.perf_counter() - started), inserted


async def pipeline(store: Store, readings: list[Reading], spool_dir: Path) -> float:
    """Spool (durable) -> forwarder -> store, concurrently, until all is committed."""
    async with Spool(spool_dir / "spool.db") as spool:
        forwarder = Forwarder(spool, store, batch_items=BATCH)
        started = time.perf_counter()
        task = asyncio.create_task(forwarder.run())
        try:
            # The pipeline appends one batch per burst of samples; 500 readings is a burst of
            # about 70 meter polls.
            for i in range(0, len(readings), 500):
                await spool.append(Batch(readings=readings[i : i + 500]))
            while spool.stats().rows:  # noqa: ASYNC110 - the spool has no "empty" event
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return len(readings) / (time.perf_counter() - started)


async def sqlite_bare(path: Path, readings: list[Reading]) -> float:
    """rows/s of a plain executemany INSERT into the same table and indexes (no conflict handling)."""
    from storage.sqlite import rows as sq_rows

    async with await SqliteStore.open(path) as s:
        await s.migrate()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    for b in batches(readings):
        con.execute("BEGIN IMMEDIATE")
        con.executemany(f"INSERT INTO readings ({sq_rows.READING_IN}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [sq_rows.reading_row(r) for r in b.readings])  # fmt: skip
        con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return len(readings) / elapsed


# -- queries ------------------------------------------------------------------------------
def tuned_settings() -> dict[str, str]:
    """What a tuned database server has (timescaledb-tune, which the official Timescale images
    run at first start, gives shared_buffers a quarter of the memory): PostgreSQL's default of
    128 MB would make every query read its pages from the OS cache."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"shared_buffers": f"{memory // 4 // 2**20}MB"}


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    # Warm-up, not timed, to the steady state a running gateway is in: psycopg prepares a
    # statement at its 6th execution on a connection, and PostgreSQL then tries 5 custom
    # plans before it settles on the generic one; until then each call plans over every
    # chunk of the hypertable (3-5 ms for "latest" on a year of 7-day chunks). 20 calls
    # cover that on a pooled connection.
    for _ in range(20):
        await fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def queries(store: Store, meters: int, days: int, n: int,
                  only: str | None = None) -> dict[str, tuple[float, float]]:  # fmt: skip
    rnd = random.Random(5)
    end = T0 + timedelta(days=days)
    month = T0 + timedelta(days=min(days - 31, 150))
    top = (await store.feed(after=0, limit=1)).items
    first_seq = top[0].seq if top else 0
    total = meters * len(CHANNELS) * days * 96

    def meter() -> str:
        return f"M-{rnd.randrange(meters):05d}"

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "latest readings (3 channels)": lambda: store.latest_readings(meter()),
        "one meter's month, one channel": lambda: store.readings(
            meter(), start=month, end=month + timedelta(days=30), channel=Channel.ENERGY_IMPORT, limit=5000),
        "a year of daily consumption": lambda: store.consumption(
            meter(), Channel.ENERGY_IMPORT, start=T0, end=end, bucket="day"),
        "billing read (a month)": lambda: store.billing_read(
            meter(), Channel.ENERGY_IMPORT, start=month, end=month + timedelta(days=30)),
        "feed page of 1,000": lambda: store.feed(
            after=(first_seq or 0) + rnd.randrange(max(1, total - 1000)), limit=1000),
    }  # fmt: skip
    return {name: await timed(call, n) for name, call in calls.items() if only in (None, name)}


async def build_query_store_pg(dsn: str, meters: int, days: int, *, reorder: bool = True) -> None:
    """Fill readings with a bare COPY (fast), a few flagged reads, then ANALYZE. `reorder`:
    rewrite the closed chunks by meter as a gateway with storage.reorder_chunks on does
    (TimescaleDB, Apache: see storage.timescale.policies; the bench's year lies in the
    past, so every chunk is closed)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET TIME ZONE 'UTC'")
        for d in range(days):
            day = make_readings(meters * len(CHANNELS) * 96, meters, T0 + timedelta(days=d))
            if d % 30 == 7:  # an estimate now and then, so the flagged index is not empty
                day[0] = Reading(day[0].meter_id, day[0].channel, day[0].ts, day[0].value, day[0].kind,
                                 Quality.ESTIMATED, Status.ESTIMATED, Source.ESTIMATE)  # fmt: skip
            async with conn.transaction(), conn.cursor().copy(
                f"COPY readings ({ts_rows.READING_IN}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(ts_rows.READING_TYPES)
                for r in day:
                    await copy.write_row(ts_rows.reading_row(r))
        # The bulk COPY bypasses store.write, which keeps meter_channels (what "latest" probes).
        await conn.execute("INSERT INTO meter_channels (meter_id, channel) SELECT DISTINCT meter_id, channel"
                           " FROM readings ON CONFLICT DO NOTHING")
    if reorder:
        await reorder_all(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("ANALYZE readings")
        await conn.execute("ANALYZE meter_channels")


async def reorder_all(dsn: str) -> float:
    """Reorder every closed readings chunk (seconds it took); stops when a run gets no further
    (a chunk the database keeps refusing would otherwise loop for ever)."""
    t = time.perf_counter()
    async with await TimescaleStore.open(dsn) as store:
        while (result := await store.reorder(budget=None)).left and result.reordered:
            pass
    return time.perf_counter() - t


def build_query_store_sqlite(path: Path, meters: int, days: int) -> None:
    from storage.sqlite import rows as sq_rows

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    for d in range(days):
        day = make_readings(meters * len(CHANNELS) * 96, meters, T0 + timedelta(days=d))
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO readings ({sq_rows.READING_IN}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [sq_rows.reading_row(r) for r in day])  # fmt: skip
        con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


# -- main ---------------------------------------------------------------------------------
def table(title: str, rows: list[tuple[str, ...]], head: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"\n{title}")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--ingest-rows", type=int, default=None)
    parser.add_argument("--meters", type=int, default=None, help="meters in the query store")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=None, help="calls per query")
    parser.add_argument("--skip-queries", action="store_true")
    args = parser.parse_args()
    print(speed())
    n_ingest = args.ingest_rows or (100_000 if args.quick else 1_000_000)
    meters = args.meters or (10 if args.quick else 100)
    repeat = args.repeat or (50 if args.quick else 200)
    readings = make_readings(n_ingest, 1000)
    print(f"meter-gateway storage bench: {n_ingest:,} ingest rows, query store {meters} meters x 3 channels x "
          f"{args.days} days of 15-minute reads = {meters * 3 * args.days * 96:,} rows; load {os.getloadavg()}")

    root = _make_root()
    cluster = PgCluster(root, free_port())
    work = Path(tempfile.mkdtemp(prefix="mg-bench-"))
    try:
        cluster.init()
        cluster.start(durable=True, settings=tuned_settings())
        ingest: list[tuple[str, ...]] = []
        dbs = [cluster.create_database() for _ in range(4)]
        async with await TimescaleStore.open(cluster.dsn(dbs[0])) as s0:
            await s0.migrate()
            limit = await bare_copy(cluster.dsn(dbs[0]), readings)
        ingest.append(("TimescaleDB", "bare binary COPY (the limit)", f"{limit:,.0f}", "100 %"))
        for name, db, kw in (("store.write (idempotent)", dbs[1], {}),
                             ("staging only (obvious path)", dbs[2], {"fast": False})):  # fmt: skip
            async with await TimescaleStore.open(cluster.dsn(db)) as s:
                await s.migrate()
                rate, inserted = await store_write(s, readings, **kw)
                assert inserted == n_ingest
                ingest.append(("TimescaleDB", name, f"{rate:,.0f}", f"{rate / limit:.0%}"))
                if not kw:
                    replay, again = await store_write(s, readings)
                    assert again == 0
                    ingest.append(("TimescaleDB", "replay of the same rows (no-op)", f"{replay:,.0f}",
                                   f"{replay / limit:.0%}"))  # fmt: skip
        async with await TimescaleStore.open(cluster.dsn(dbs[3])) as s:
            await s.migrate()
            rate = await pipeline(s, readings, work)
            ingest.append(("TimescaleDB", "pipeline: spool -> forwarder -> store", f"{rate:,.0f}",
                           f"{rate / limit:.0%}"))  # fmt: skip

        sq_limit = await sqlite_bare(work / "bare.db", readings)
        ingest.append(("SQLite", "plain executemany INSERT (the limit)", f"{sq_limit:,.0f}", "100 %"))
        async with await SqliteStore.open(work / "s1.db") as s:
            await s.migrate()
            rate, _ = await store_write(s, readings)
            ingest.append(("SQLite", "store.write (idempotent)", f"{rate:,.0f}", f"{rate / sq_limit:.0%}"))
        async with await SqliteStore.open(work / "s2.db") as s:
            await s.migrate()
            rate = await pipeline(s, readings, work / "p2")
            ingest.append(("SQLite", "pipeline: spool -> forwarder -> store", f"{rate:,.0f}",
                           f"{rate / sq_limit:.0%}"))  # fmt: skip
        table("Ingest, rows/s (batches of 5,000)", ingest, ("store", "path", "rows/s", "of limit"))
        # The ingest rows (a million Reading objects) are not part of what the queries run
        # with: kept, every full garbage collection during the queries walked them all, and
        # the p99s measured this bench's heap instead of the store (a gateway holds a pass).
        del readings
        gc.collect()

        if args.skip_queries:
            return
        results: list[tuple[str, ...]] = []
        qdb = cluster.create_database()
        t = time.perf_counter()
        async with await TimescaleStore.open(cluster.dsn(qdb)) as s:
            await s.migrate()
            await build_query_store_pg(cluster.dsn(qdb), meters, args.days, reorder=False)
            built = time.perf_counter() - t
            # The month once as the readings arrived, then reordered (storage.reorder_chunks).
            month = await queries(s, meters, args.days, repeat, only="one meter's month, one channel")
            for q, (p50, p99) in month.items():
                results.append(("TimescaleDB", f"{q} (arrival order)", f"{p50:.2f}", f"{p99:.2f}"))
            reordered = await reorder_all(cluster.dsn(qdb))
            for q, (p50, p99) in (await queries(s, meters, args.days, repeat)).items():
                results.append(("TimescaleDB", q, f"{p50:.2f}", f"{p99:.2f}"))
        t = time.perf_counter()
        qpath = work / "q.db"
        async with await SqliteStore.open(qpath) as s:
            await s.migrate()
        build_query_store_sqlite(qpath, meters, args.days)
        sq_built = time.perf_counter() - t
        async with await SqliteStore.open(qpath) as s:
            for q, (p50, p99) in (await queries(s, meters, args.days, repeat)).items():
                results.append(("SQLite", q, f"{p50:.2f}", f"{p99:.2f}"))
        table(f"Query latency, ms ({meters * 3 * args.days * 96:,} readings; built in {built:.0f} s (TimescaleDB; "
              f"then every chunk reordered by meter in {reordered:.0f} s, as storage.reorder_chunks does), "
              f"{sq_built:.0f} s (SQLite); {repeat} calls each after 20 untimed; PostgreSQL shared_buffers "
              f"{tuned_settings()['shared_buffers']})", results, ("store", "query", "p50", "p99"))
    finally:
        if cluster.running:
            cluster.stop("fast")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    eventloop.run(main())  # as the gateway runs: uvloop, the start-up heap frozen
