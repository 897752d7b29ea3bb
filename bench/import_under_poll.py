"""A large CSV import while the gateway polls (issue 27, item 3). Not a test: prints a table.

    .venv/bin/python bench/import_under_poll.py                     # both stores, full sizes
    .venv/bin/python bench/import_under_poll.py --backend sqlite --quick

A gateway on uvloop (as `meter-gateway run` starts it) polls `--meters` simulated Modbus meters
every `--interval` seconds (the simulator, the gateway and this client share one process and
one event loop, so every figure includes the client's own work). Then, each while /healthz is
asked every 20 ms and the pollers' slots are counted:

  narrow   a 40,000-row file of the issue's kind (meter, utility, protocol, device number,
           consumer number: about 2 MB)
  wide     a 40,000-row file with every column filled (about 6 MB; the issue's was 5.8), as
           multipart/form-data
  summary  GET /v1/fleet/summary over the 80,000 meters the two imports left (every one of them
           silent: never seen), and the silent list a page of 1,000 at a time

Per step: how long it took, /healthz p50 / p99 / max during it, poll slots skipped and polls
made meanwhile, the longest the store's write transaction of the import lasted (on SQLite the
spool forwarder waits that long; readings stay in the spool meanwhile), and the spool's
deepest backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.machine import speed, table
from gateway.runtime import eventloop
from gateway.runtime.gateway import Gateway
from simulators.modbus import SimFleet
from tests.fixtures.gateway import gateway_config, running_gateway
from tests.fixtures.modbus import profile
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster, _make_root

HEADER = "meter_id,utility,protocol,address,model,device_number,payg,consumer_number,location,tags"


def narrow_csv(rows: int, prefix: str) -> bytes:
    """The issue's kind of file: the identifiers, nothing else (about 52 bytes a row)."""
    lines = [HEADER] + [f"{prefix}-{i:06d},electricity,mqtt,,,{prefix}N-{i:06d},,C-{prefix}-{i:06d},,"
                        for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def wide_csv(rows: int, prefix: str) -> bytes:
    """Every column filled: about 149 bytes a row."""
    lines = [HEADER] + [
        f"{prefix}-{i:06d},electricity,modbus_tcp,10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:502/{i % 247 + 1},"
        f"sdm630,SDM630-{prefix}-{i:06d},false,C-{prefix}-{i:07d},{i} Harbour Road flat {i % 40},"
        f"feeder=F{i % 97};tariff=residential"
        for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


class Watch:
    """While a step runs: /healthz every 20 ms, the spool's depth, the pollers' counters."""

    def __init__(self, gw: Gateway, api: httpx.AsyncClient) -> None:
        self.gw, self.api = gw, api
        self.latencies: list[float] = []
        self.spool_max = 0

    def _polls(self) -> tuple[int, int]:
        health = [h for p in self.gw.pollers.values() for h in p.health().values()]
        return sum(h.skipped for h in health), sum(h.polls for h in health)

    async def _sample(self, done: asyncio.Event) -> None:
        while not done.is_set():
            start = time.perf_counter()
            resp = await self.api.get("/healthz")
            self.latencies.append((time.perf_counter() - start) * 1000)
            assert resp.status_code == 200, resp.text
            if self.gw.spool is not None:
                self.spool_max = max(self.spool_max, self.gw.spool.stats().items)
            await asyncio.sleep(0.02)

    async def run(self, step: Callable[[], Awaitable[str]]) -> dict[str, Any]:
        self.latencies, self.spool_max = [], 0
        skipped0, polls0 = self._polls()
        done = asyncio.Event()
        sampler = asyncio.create_task(self._sample(done))
        start = time.perf_counter()
        note = await step()
        took = time.perf_counter() - start
        await asyncio.sleep(0.5)  # a poll that overran is counted when it ends
        done.set()
        await sampler
        skipped1, polls1 = self._polls()
        lat = sorted(self.latencies)
        return {"s": took, "note": note, "p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "max": lat[-1], "n": len(lat), "skipped": skipped1 - skipped0, "polls": polls1 - polls0,
                "spool": self.spool_max}


def timed_writes(gw: Gateway) -> list[float]:
    """Wrap the store's create_meters to record how long each write transaction lasts."""
    assert gw.store is not None
    store: Any = gw.store
    spans: list[float] = []
    create = store.create_meters

    async def create_meters(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        try:
            await create(*args, **kwargs)
        finally:
            spans.append(time.perf_counter() - start)

    store.create_meters = create_meters
    return spans


async def one_backend(backend: str, rows: int, meters: int, interval: float, dsn: str | None) -> list[tuple[str, ...]]:
    fleet = SimFleet(profile("generic"), meters)
    await fleet.start()
    out: list[tuple[str, ...]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
            cfg = gateway_config(Path(tmp), modbus_port=fleet.port, n_modbus=meters, interval=interval,
                                 backend=backend, dsn=dsn)
            async with running_gateway(cfg) as (gw, api):
                await asyncio.sleep(3 * interval + 2)  # every meter polled a few times first
                writes = timed_writes(gw)
                watch = Watch(gw, api)
                narrow, wide = narrow_csv(rows, "N"), wide_csv(rows, "W")

                async def import_(body: bytes, multipart: bool) -> str:
                    writes.clear()
                    kw: dict[str, Any] = ({"files": {"file": ("meters.csv", body, "text/csv")}} if multipart else
                                          {"content": body, "headers": {"content-type": "text/csv"}})
                    resp = await api.post("/v1/meters/import", timeout=600, **kw)
                    assert resp.status_code == 201, resp.text[:500]
                    return f"{resp.json()['imported']:,} imported; store write {max(writes):.2f} s"

                async def summary() -> str:
                    body = (await api.get("/v1/fleet/summary", timeout=120)).json()
                    return f"{body['meters']:,} meters, {body['silent']:,} silent"

                async def silent_pages() -> str:
                    cursor, n, pages = None, 0, 0
                    while True:
                        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                        page = (await api.get("/v1/fleet/silent", params=params, timeout=120)).json()
                        n, pages, cursor = n + len(page["items"]), pages + 1, page["next_cursor"]
                        if cursor is None:
                            return f"{n:,} silent meters in {pages} pages"

                for label, step in ((f"narrow CSV ({len(narrow) / 1e6:.1f} MB, text/csv)", lambda: import_(narrow, False)),
                                    (f"wide CSV ({len(wide) / 1e6:.1f} MB, multipart)", lambda: import_(wide, True)),
                                    ("GET /v1/fleet/summary", summary),
                                    ("GET /v1/fleet/silent, pages of 1,000", silent_pages)):
                    r = await watch.run(step)
                    out.append((backend, label, f"{r['s']:.2f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}",
                                str(r["n"]), str(r["skipped"]), str(r["polls"]), str(r["spool"]), r["note"]))
    finally:
        await fleet.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("sqlite", "timescale", "both"), default="both")
    ap.add_argument("--rows", type=int, default=40_000, help="rows per file (at most 50,000)")
    ap.add_argument("--meters", type=int, default=10, help="simulated Modbus meters polled meanwhile")
    ap.add_argument("--interval", type=float, default=0.5, help="their poll interval, seconds")
    ap.add_argument("--quick", action="store_true", help="5,000 rows a file")
    args = ap.parse_args()
    rows = 5_000 if args.quick else args.rows
    print(speed())
    print(f"import under poll: {rows:,} rows a file, {args.meters} Modbus meters polled every {args.interval:g} s "
          f"({args.meters / args.interval:.0f} slots/s)")
    results: list[tuple[str, ...]] = []
    backends = ("sqlite", "timescale") if args.backend == "both" else (args.backend,)
    for backend in backends:
        if backend == "sqlite":
            results += eventloop.run(one_backend(backend, rows, args.meters, args.interval, None))
            continue
        root = _make_root()
        cluster = PgCluster(root, free_port())
        try:
            cluster.init()
            cluster.start(durable=True)
            dsn = cluster.dsn(cluster.create_database())
            results += eventloop.run(one_backend(backend, rows, args.meters, args.interval, dsn))
        finally:
            if cluster.running:
                cluster.stop("fast")
            shutil.rmtree(root, ignore_errors=True)
    table("While the gateway polls (ms for /healthz, asked every 20 ms)",
          ("store", "step", "s", "p50", "p99", "max", "asked", "skipped", "polls", "spool", "result"), results)
    print(f"\nload after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
