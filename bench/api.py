"""API benchmark of the account-system API (issue 7) over TimescaleDB. Not a test: prints a table.

    .venv/bin/python bench/api.py            # full: 10.5 M readings (100 meters x 3 channels x a year)
    .venv/bin/python bench/api.py --quick    # about a minute: 10 meters (1.05 M readings), fewer requests

A private PostgreSQL + TimescaleDB cluster (fsync on; never the machine's own server) is
filled with bench/ingest.py's builder (15-minute reads of energy_import, power and
voltage_l1), the meters are registered with one consumer each. The API runs as the gateway
runs it (create_app + uvicorn on the gateway's event loop, one process, the store's default
pool) in a child process; the client (this process: plain keep-alive HTTP/1.1 connections, on
uvloop too) keeps 32 requests in flight and measures each one:

  latest reading          GET /v1/meters/{m}/readings/latest
  one meter's month       GET /v1/meters/{m}/readings?channel=energy_import&from&to&limit=5000 (2,880 reads)
  feed page of 1,000      GET /v1/readings/feed?after={cursor at a random seq}&limit=1000
  a year of daily use     GET /v1/meters/{m}/consumption?bucket=day&from&to (365 buckets)
  billing reads, a month  GET /v1/consumers/{c}/billing?from&to

then one client pulling the feed from the start, page after page (limit 5,000): readings/s.
Targets (issue 7): latest p99 < 15 ms at concurrency 32; feed >= 50,000 readings/s.
Also the store-level latency of "latest" with the query it replaced (every canonical
channel probed, across every chunk) and with the meter_channels one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench.ingest import T0, build_query_store_pg, table, timed, tuned_settings
from bench.machine import speed
from gateway.model import Channel, Meter, MeterStatus, Protocol, Utility
from gateway.runtime import eventloop
from storage.keys import Scope, new_key
from storage.timescale import rows as ts_rows
from storage.timescale.store import TimescaleStore
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster, _make_root

CONCURRENCY = 32

# What "latest readings" ran before meter_channels: one probe per canonical channel.
_OLD_LATEST = (
    "SELECT l.* FROM unnest(%(channels)s::text[]) AS c(channel)"
    f" CROSS JOIN LATERAL (SELECT {ts_rows.READING_COLS} FROM readings AS r"
    "  WHERE r.meter_id = %(m)s AND r.channel = c.channel ORDER BY r.ts DESC LIMIT 1) AS l ORDER BY l.channel"
)


def meter_id(i: int) -> str:
    return f"M-{i:05d}"


async def register(dsn: str, meters: int) -> str:
    """Meters M-00000.. with consumers C-00000.. from T0; returns an admin API key."""
    async with await TimescaleStore.open(dsn) as store:
        await store.create_meters([
            Meter(meter_id(i), Utility.ELECTRICITY, Protocol.MODBUS_TCP, f"10.0.0.1:502/{i % 247 + 1}",
                  status=MeterStatus.ACTIVE, installed_at=T0 - timedelta(days=1), consumer_number=f"C-{i:05d}")
            for i in range(meters)], at=T0)
        key, row = new_key("bench", frozenset({Scope.ADMIN}), datetime.now(UTC))
        await store.create_api_key(row)
    return key


def serve(dsn: str, port: int) -> None:
    """The child process: the API as the gateway serves it."""
    import uvicorn

    from api.app import create_app
    from storage.open import open_store

    async def main() -> None:
        store = await open_store("timescale", dsn=dsn)
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                                   log_level="warning", access_log=False, lifespan="off"))
            await server.serve()
        finally:
            await store.close()

    eventloop.run(main())


class Connection:
    """One keep-alive HTTP/1.1 connection. Not httpx: its connection pool costs the client
    several milliseconds per request at this concurrency, which the figures would then show
    instead of the server's (a bare FastAPI /healthz measured 127 req/s through it, 3,000 this way)."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self.head)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v.split(b":")[1]) for v in lines if v.lower().startswith(b"content-length:"))
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def load(port: int, key: str, make_url: Callable[[], str], n: int,
               concurrency: int = CONCURRENCY) -> tuple[float, float, float]:  # fmt: skip
    """n GETs with `concurrency` in flight (one connection each): (p50 ms, p99 ms, requests/s)."""
    samples: list[float] = []
    queue = [make_url() for _ in range(n)]
    conns = [Connection(port, key) for _ in range(concurrency)]

    async def worker(conn: Connection) -> None:
        try:
            while queue:
                url = queue.pop()
                t = time.perf_counter()
                status, body = await conn.get(url)
                samples.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    msg = f"GET {url}: {status} {body[:300]!r}"
                    raise RuntimeError(msg)
        finally:
            await conn.close()

    # Connected before the clock starts: an account system keeps its connections open, and 32
    # connects at once would otherwise land in the first requests' latency.
    await asyncio.gather(*(c.connect() for c in conns))
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for conn in conns:
            tg.create_task(worker(conn))
    elapsed = time.perf_counter() - started
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))], n / elapsed


async def pull_feed(port: int, key: str, total: int, page: int = 5000) -> float:
    """One client pulling `total` readings from the start of the feed (and parsing them): readings/s."""
    got, after = 0, None
    conn = Connection(port, key)
    started = time.perf_counter()
    try:
        while got < total:
            status, raw = await conn.get(f"/v1/readings/feed?limit={page}" + (f"&after={after}" if after else ""))
            body = json.loads(raw)
            got += len(body["items"])
            after = body["next_cursor"]
            if status != 200 or not body["more"]:
                break
    finally:
        await conn.close()
    return got / (time.perf_counter() - started)


async def store_latest(dsn: str, meters: int, n: int) -> dict[str, tuple[float, float]]:
    """Store-level p50/p99 of latest readings: the old per-canonical-channel query and the current one."""
    rnd = random.Random(3)
    async with await TimescaleStore.open(dsn) as store:
        async def old() -> Any:
            return await store._fetch("old latest", _OLD_LATEST,
                                      {"m": meter_id(rnd.randrange(meters)), "channels": [c.value for c in Channel]})
        return {"store latest, old query (14 canonical channels)": await timed(old, n),
                "store latest, meter_channels": await timed(
                    lambda: store.latest_readings(meter_id(rnd.randrange(meters))), n)}


async def wait_up(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.returncode is not None:
                msg = f"the API process exited with {proc.returncode}"
                raise RuntimeError(msg)
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API process did not start within 30 s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 meters and fewer requests: about a minute")
    parser.add_argument("--meters", type=int, default=None, help="meters (x 3 channels x a year of 15-min reads)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=None, help="requests per scenario")
    args = parser.parse_args()
    print(speed())
    meters = args.meters or (10 if args.quick else 100)
    n = args.requests or (300 if args.quick else 2000)
    readings = meters * 3 * args.days * 96
    print(f"meter-gateway API bench: {readings:,} readings ({meters} meters x 3 channels x {args.days} days), "
          f"{n} requests per scenario at concurrency {CONCURRENCY}; load {os.getloadavg()}")

    root = _make_root()
    cluster = PgCluster(root, free_port())
    proc: asyncio.subprocess.Process | None = None
    try:
        cluster.init()
        cluster.start(durable=True, settings=tuned_settings())
        dsn = cluster.dsn(cluster.create_database())
        t = time.perf_counter()
        async with await TimescaleStore.open(dsn, chunk_interval="7 days") as s:
            await s.migrate()
        await build_query_store_pg(dsn, meters, args.days)
        key = await register(dsn, meters)
        print(f"store built in {time.perf_counter() - t:.0f} s (closed chunks reordered by meter, as with "
              "storage.reorder_chunks on)")

        port = free_port()
        proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", dsn, str(port))
        url = f"http://127.0.0.1:{port}"
        await wait_up(url, proc)
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute("SELECT min(seq), max(seq) FROM readings")
            lo, hi = await cur.fetchone() or (0, 0)
        rnd = random.Random(7)
        end = T0 + timedelta(days=args.days)
        month = T0 + timedelta(days=min(args.days - 31, 150))

        def m() -> str:
            return meter_id(rnd.randrange(meters))


        def iso(d: datetime) -> str:
            return d.isoformat().replace("+00:00", "Z")

        from api.pagination import encode_cursor

        scenarios: list[tuple[str, Callable[[], str]]] = [
            ("latest reading", lambda: f"/v1/meters/{m()}/readings/latest"),
            ("one meter's month (2,880 reads)", lambda: f"/v1/meters/{m()}/readings?channel=energy_import"
             f"&from={iso(month)}&to={iso(month + timedelta(days=30))}&limit=5000"),
            ("feed page of 1,000", lambda: f"/v1/readings/feed?limit=1000&after="
             f"{encode_cursor([rnd.randrange(lo, max(lo + 1, hi - 1000))])}"),
            ("a year of daily consumption", lambda: f"/v1/meters/{m()}/consumption?bucket=day&from={iso(T0)}"
             f"&to={iso(end)}"),
            ("billing reads for a month", lambda: f"/v1/consumers/C-{rnd.randrange(meters):05d}/billing?"
             f"from={iso(month)}&to={iso(month + timedelta(days=30))}"),
        ]
        results: list[tuple[str, ...]] = []
        await load(port, key, scenarios[0][1], 100)  # warm-up: key cache, pool, plans
        for name, make in scenarios:
            # "latest" runs at thousands a second: five times as many requests, so that its p99
            # rests on 100 requests, not 20, and the run lasts a few seconds.
            runs = 5 * n if name == "latest reading" else n if "month" not in name and "year" not in name else max(50, n // 4)
            p50, p99, rate = await load(port, key, make, runs)
            results.append((name, f"{p50:.1f}", f"{p99:.1f}", f"{rate:,.0f}", str(runs)))
        # Latency without queueing: at concurrency 32 a request mostly waits for the 31 before it
        # (Little's law: latency = in flight / throughput), so the same request at lower
        # concurrency shows what one costs.
        for c in (1, 8):
            p50, p99, rate = await load(port, key, scenarios[0][1], n // 2, concurrency=c)
            results.append((f"latest reading, concurrency {c}", f"{p50:.1f}", f"{p99:.1f}", f"{rate:,.0f}", str(n // 2)))
        feed_rate = await pull_feed(port, key, min(readings, 2_000_000 if not args.quick else 500_000))
        table(f"API latency at concurrency {CONCURRENCY} (ms) and throughput", results,
              ("request", "p50", "p99", "req/s", "requests"))
        table("Feed pulled by one client (pages of 5,000)", [("readings/s", f"{feed_rate:,.0f}")], ("figure", "value"))
        store_rows: list[tuple[str, ...]] = [(q, f"{p50:.2f}", f"{p99:.2f}") for q, (p50, p99) in
                      (await store_latest(dsn, meters, 200 if args.quick else 1000)).items()]
        table("Store-level latest readings (ms, one caller)", store_rows, ("query", "p50", "p99"))
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
        if cluster.running:
            cluster.stop("fast")
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        eventloop.run(main())  # the client too: its own loop overhead is not the server's latency
