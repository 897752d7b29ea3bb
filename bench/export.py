"""Export throughput of the account system's standard doors (issue 25, item 7). Not a test: prints figures.

    .venv/bin/python bench/export.py            # 1,000 meters x 3 channels x 30 days of 15-minute reads (8.6 M)
    .venv/bin/python bench/export.py --quick    # 100 meters (864,000 readings)

The store (a private TimescaleDB, and the embedded SQLite store) is filled with bench/ingest.py's
builder; every meter has a consumer. The API runs in a child process as the gateway serves it. This
process then pulls, one request at a time:

  CIM MeterReadings    GET /v1/cim/meter-readings?meter=<10 meters>&from&to&limit=100000, page after page,
                       for every meter: readings/s of the whole export, and per page
  Green Button         GET /v1/consumers/{c}/green-button?from&to for every consumer (30 days of hourly
                       consumption from the 15-minute register reads): source readings/s and feeds/s

and reads the API process' peak resident memory (VmHWM) before and after each export, with a window of
3 days and of 30 days, so that "memory flat in the size of the range" is a figure. Target (issue 25):
CIM >= 100,000 readings/s from TimescaleDB.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import register
from bench.ingest import CHANNELS, T0, build_query_store_pg, build_query_store_sqlite, table, tuned_settings
from bench.machine import speed
from gateway.model import Meter, MeterStatus, Protocol, Utility
from gateway.runtime import eventloop
from storage.keys import Scope, new_key
from storage.sqlite.store import SqliteStore
from storage.timescale.store import TimescaleStore
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster, _make_root

GROUP = 10  # meters per CIM request


def serve(kind: str, where: str, port: int) -> None:
    """The child process: the API as the gateway serves it."""
    import uvicorn

    from api.app import create_app
    from storage.open import open_store

    async def main() -> None:
        store = await (open_store("timescale", dsn=where) if kind == "timescale"
                       else open_store("sqlite", sqlite_path=Path(where)))
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                                   log_level="warning", access_log=False, lifespan="off"))
            await server.serve()
        finally:
            await store.close()

    eventloop.run(main())


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so each export has its own peak.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def current_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def cim(client: httpx.AsyncClient, meters: int, days: int) -> tuple[int, float, int]:
    """(readings, seconds, pages) of every meter's CIM MeterReadings in a window of `days`."""
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=days)).isoformat()}
    count = pages = 0
    t = time.perf_counter()
    for first in range(0, meters, GROUP):
        group = [f"M-{i:05d}" for i in range(first, min(first + GROUP, meters))]
        cursor = None
        while True:
            params: dict[str, object] = {"meter": group, "limit": 100_000, **window}
            if cursor:
                params["cursor"] = cursor
            resp = await client.get("/v1/cim/meter-readings", params=params)
            resp.raise_for_status()
            count += resp.content.count(b"<m:Readings>")
            pages += 1
            cursor = resp.headers.get("x-next-cursor")
            if not cursor:
                break
    return count, time.perf_counter() - t, pages


async def espi(client: httpx.AsyncClient, meters: int, days: int) -> tuple[int, float]:
    """(interval readings written, seconds) of every consumer's Green Button feed over `days`."""
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=days)).isoformat()}
    count = 0
    t = time.perf_counter()
    for i in range(meters):
        resp = await client.get(f"/v1/consumers/C-{i:05d}/green-button", params=window)
        resp.raise_for_status()
        count += resp.content.count(b"<IntervalReading>")
    return count, time.perf_counter() - t


async def measure(kind: str, where: str, key: str, meters: int) -> list[tuple[str, ...]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", kind, where, str(port))
    rows = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            for days in (3, 30):
                reset_peak(proc.pid)
                base = current_kb(proc.pid)
                n, secs, pages = await cim(client, meters, days)
                rows.append((kind, f"CIM MeterReadings, {days} days", f"{n:,}", f"{pages}", f"{n / secs:,.0f}",
                             f"{(peak_kb(proc.pid) - base) / 1024:.1f}"))
            for days in (3, 30):
                reset_peak(proc.pid)
                base = current_kb(proc.pid)
                n, secs = await espi(client, meters, days)
                source = meters * days * 96  # 15-minute register reads of the billing channel behind them
                rows.append((kind, f"Green Button, {days} days", f"{n:,} hourly ({source:,} reads)", f"{meters}",
                             f"{source / secs:,.0f}", f"{(peak_kb(proc.pid) - base) / 1024:.1f}"))
    finally:
        proc.terminate()
        await proc.wait()
    return rows


async def register_sqlite(path: Path, meters: int) -> str:
    store = await SqliteStore.open(path)
    try:
        await store.create_meters([
            Meter(f"M-{i:05d}", Utility.ELECTRICITY, Protocol.MODBUS_TCP, f"10.0.0.1:502/{i % 247 + 1}",
                  status=MeterStatus.ACTIVE, installed_at=T0 - timedelta(days=1), consumer_number=f"C-{i:05d}")
            for i in range(meters)], at=T0)
        key, row = new_key("bench", frozenset({Scope.ADMIN}), T0)
        await store.create_api_key(row)
    finally:
        await store.close()
    return key


async def main(args: argparse.Namespace) -> None:
    meters = args.meters or (100 if args.quick else 1000)
    print(speed())
    print(f"export bench: {meters} meters x {len(CHANNELS)} channels x 30 days of 15-minute reads "
          f"({meters * len(CHANNELS) * 30 * 96:,} readings)")
    rows: list[tuple[str, ...]] = []
    if args.store in ("timescale", "both"):
        root = _make_root()
        cluster = PgCluster(root, free_port())
        try:
            cluster.init()
            cluster.start(durable=True, settings=tuned_settings())
            dsn = cluster.dsn(cluster.create_database())
            async with await TimescaleStore.open(dsn, chunk_interval="7 days") as s:
                await s.migrate()
            await build_query_store_pg(dsn, meters, 30)
            key = await register(dsn, meters)
            rows += await measure("timescale", dsn, key, meters)
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
    if args.store in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="mg-export-") as tmp:
            path = Path(tmp) / "store.db"
            store = await SqliteStore.open(path)
            await store.migrate()
            await store.close()
            build_query_store_sqlite(path, meters, 30)
            key = await register_sqlite(path, meters)
            rows += await measure("sqlite", str(path), key, meters)
    table("Exports (one request at a time; memory: the API process' peak RSS above its RSS before)", rows,
          ("store", "export", "items", "requests", "readings/s", "peak MB"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--meters", type=int)
    parser.add_argument("--store", choices=("timescale", "sqlite", "both"), default="both")
    eventloop.run(main(parser.parse_args()))
