"""Polling under API load (issue 26, items 1 and 3). Not a test: prints figures.

    .venv/bin/python bench/api_under_poll.py                      # 500 meters at 1 s, embedded SQLite store
    .venv/bin/python bench/api_under_poll.py --store timescale

The project's Modbus simulator serves 500 meters on 10 endpoints in its own process; a real gateway
(`meter-gateway run`, generated configuration) polls each every second. An account system pulls from
another process (this script started again as `--worker`) for `--during` seconds with 32 concurrent
clients: 16 page `/v1/readings/feed` (from the start, 1,000 a page, asking again at once, as a system
catching up does), 15 ask `/v1/meters/{id}/readings/latest` of a random meter, one asks a random meter's
consumption of today by hour every 5 s. Each client waits for its answer before asking again.

Before (`--before` s), during and after (`--after` s) the load, from outside the gateway:
  slots skipped, failed polls      /metrics (meter_gateway_poll_overruns, meter_gateway_polls)
  newest-reading age p50 / p99     each second, every meter's newest committed reading (read from the store
                                   by seq, from this process): now - its timestamp; at 1 s polling it is at
                                   least the time from slot to commit, at most that plus a second
  spool backlog highest            meter_gateway_spool_items
  CPU                              per process of the gateway, the simulator's, the load's, the machine's
During: API p50 / p99 latency, requests/s and errors (status >= 400 or no answer) per route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.gwproc import (
    CpuWatch,
    StoreWatch,
    create_key,
    free_port,
    metric_sum,
    parse_metrics,
    pct,
    start_gateway,
    start_simulator,
    stop,
    timescale,
    write_config,
)
from bench.machine import speed

POLLS = "meter_gateway_polls_total"
SKIPPED = "meter_gateway_poll_overruns_total"
SPOOL = "meter_gateway_spool_items"


# -- the account system (its own process) ---------------------------------------------------------------
async def worker(url: str, key: str, meters: int, seconds: float, feed: int, latest: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    examples: dict[str, str] = {}
    ids = [f"M-{i:04d}" for i in range(1, meters + 1)]
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    async def ask(client: httpx.AsyncClient, route: str, path: str, params: dict[str, Any] | None = None) -> Any:
        start = time.perf_counter()
        try:
            resp = await client.get(path, params=params)
        except httpx.HTTPError as exc:
            errors[route] += 1
            examples.setdefault(route, f"{type(exc).__name__}: {exc}")
            return None
        lat[route].append(time.perf_counter() - start)
        if resp.status_code >= 400:
            errors[route] += 1
            examples.setdefault(route, f"{resp.status_code}: {resp.text[:200]}")
            return None
        return resp.json()

    async def feeder(client: httpx.AsyncClient) -> None:
        after: str | None = None
        while time.monotonic() < end:
            page = await ask(client, "GET /v1/readings/feed", "/v1/readings/feed",
                             {"limit": 1000, **({"after": after} if after else {})})
            if page is not None:
                after = page["next_cursor"]

    async def latest_asker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            await ask(client, "GET /v1/meters/{id}/readings/latest", f"/v1/meters/{random.choice(ids)}/readings/latest")

    async def consumption(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            await ask(client, "GET /v1/meters/{id}/consumption", f"/v1/meters/{random.choice(ids)}/consumption",
                      {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat(), "bucket": "hour",
                       "channel": "energy_import"})
            await asyncio.sleep(5)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                 limits=limits) as client:
        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for _ in range(feed):
                tg.create_task(feeder(client))
            for _ in range(latest):
                tg.create_task(latest_asker(client))
            tg.create_task(consumption(client))
        wall = time.monotonic() - t0
    return {"wall": wall, "cpu_s": time.process_time(), "routes": {r: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)} for r, v in lat.items()},
            "errors": dict(errors), "examples": examples}


# -- the measurement -----------------------------------------------------------------------------------
class Phase:
    def __init__(self, name: str, gw_pid: int, sim_pid: int) -> None:
        self.name = name
        self.cpu, self.sim = CpuWatch(gw_pid), CpuWatch(sim_pid)
        self.ages: list[float] = []
        self.spool_max = 0
        self.m0: dict[str, float] = {}
        self.m1: dict[str, float] = {}
        self.load_cpu = float("nan")


async def phase(name: str, seconds: float, gw: int, sim: int, client: httpx.AsyncClient, watch: StoreWatch,
                meters: int, during: asyncio.Task[Any] | None = None) -> Phase:
    ph = Phase(name, gw, sim)
    ph.m0 = parse_metrics((await client.get("/metrics", timeout=30)).text)
    ph.cpu.start()
    ph.sim.start()
    end = time.monotonic() + seconds
    tick = 0
    while time.monotonic() < end or (during is not None and not during.done()):
        await asyncio.sleep(1.0)
        when, _ = await asyncio.to_thread(watch.look)
        if len(watch.newest) == meters:  # every meter has a reading: ages are every meter's
            ph.ages += [when - ts for ts in watch.newest.values()]
        tick += 1
        if tick % 3 == 0:
            with contextlib.suppress(httpx.HTTPError):
                m = parse_metrics((await client.get("/metrics", timeout=30)).text)
                ph.spool_max = max(ph.spool_max, int(m.get(SPOOL, 0)))
    ph.cpu.stop()
    ph.sim.stop()
    ph.m1 = parse_metrics((await client.get("/metrics", timeout=30)).text)
    return ph


async def run(args: argparse.Namespace, dsn: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-api-poll-") as tmp:
        data = Path(tmp)
        sim, ports = await start_simulator(args.meters, args.endpoints, args.profile)
        gw = None
        try:
            api_port = free_port()
            config = write_config(data, ports, args.meters, profile=args.profile, interval=1.0, store=args.store,
                                  dsn=dsn, api_port=api_port)
            key = await asyncio.to_thread(create_key, config)
            url = f"http://127.0.0.1:{api_port}"
            gw = await start_gateway(config, data / "gateway.log", url)
            watch = StoreWatch(args.store, sqlite_path=data / "store.db", dsn=dsn)
            watch.open()
            watch.last_seq = 0  # every meter's newest reading, from the start
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
                await asyncio.sleep(args.warmup)
                before = await phase("before", args.before, gw.pid, sim.pid, client, watch, args.meters)
                load = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--worker", url, key, str(args.meters), str(args.during),
                    str(args.feed), str(args.latest), stdout=asyncio.subprocess.PIPE)
                out = asyncio.create_task(load.communicate())
                during = await phase("during", args.during, gw.pid, sim.pid, client, watch, args.meters, out)
                result = json.loads((await out)[0])
                during.load_cpu = 100 * result["cpu_s"] / result["wall"]
                after = await phase("after", args.after, gw.pid, sim.pid, client, watch, args.meters)
            watch.close()
        finally:
            if gw is not None:
                await stop(gw)
            await stop(sim, sig=2)
    phases = [before, during, after]
    rows: list[tuple[str, ...]] = []

    def per(label: str, f: Any) -> None:
        rows.append((label, *(f(p) for p in phases)))

    per("seconds", lambda p: f"{args.before if p is before else args.during if p is during else args.after:g}")
    per("slots skipped", lambda p: f"{metric_sum(p.m1, SKIPPED) - metric_sum(p.m0, SKIPPED):.0f}")
    per("polls ok", lambda p: f"{metric_sum(p.m1, POLLS, result='ok') - metric_sum(p.m0, POLLS, result='ok'):.0f}")
    per("failed polls", lambda p: f"{metric_sum(p.m1, POLLS, result='!ok') - metric_sum(p.m0, POLLS, result='!ok'):.0f}")
    per("newest-reading age p50 / p99 (s)", lambda p: f"{pct(p.ages, 50):.1f} / {pct(p.ages, 99):.1f}")
    per("spool backlog highest (items)", lambda p: f"{p.spool_max:,}")
    labels = sorted({k for p in phases for k in p.cpu.result})
    for k in labels:
        per(f"CPU % of one core: {k}", lambda p, k=k: f"{p.cpu.result.get(k, 0):.0f}")
    per("CPU % of one core: simulator", lambda p: f"{sum(p.sim.result.values()):.0f}")
    per("CPU % of one core: account system (load)", lambda p: "-" if p is not during else f"{p.load_cpu:.0f}")
    per(f"CPU % of one core: whole machine ({os.cpu_count()} cores)", lambda p: f"{p.cpu.machine_pct:.0f}")
    widths = [max(len(r[i]) for r in [("", "before", "during", "after"), *rows]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("", "before", "during", "after"), widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    wall = result["wall"]
    print(f"\nAPI during the load ({args.feed} feed + {args.latest} latest + 1 consumption clients, {wall:.0f} s):")
    total = sum(v["n"] for v in result["routes"].values())
    print(f"{'route':<38}  {'answers':>8}  {'per s':>6}  {'p50 ms':>7}  {'p99 ms':>7}  errors")
    for route, v in sorted(result["routes"].items()):
        print(f"{route:<38}  {v['n']:>8}  {v['n'] / wall:>6.1f}  {1000 * v['p50']:>7.0f}  {1000 * v['p99']:>7.0f}  "
              f"{result['errors'].get(route, 0)}")
    print(f"{'all':<38}  {total:>8}  {total / wall:>6.1f}  {'':>7}  {'':>7}  {sum(result['errors'].values())}")
    for route, text in result["examples"].items():
        print(f"  first error on {route}: {text}")


async def main(args: argparse.Namespace) -> None:
    print(speed())
    print(f"api under poll: {args.meters} meters ({args.profile}) on {args.endpoints} endpoints every 1 s, store "
          f"{args.store}; warm-up {args.warmup:g} s, then {args.before:g} s before, {args.during:g} s of load, "
          f"{args.after:g} s after")
    if args.store == "timescale":
        async with timescale() as (dsn, _):
            await run(args, dsn)
    else:
        await run(args, None)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=500)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--profile", default="sdm630")
    p.add_argument("--store", choices=("sqlite", "timescale"), default="sqlite")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--before", type=float, default=20.0)
    p.add_argument("--during", type=float, default=60.0)
    p.add_argument("--after", type=float, default=20.0)
    p.add_argument("--feed", type=int, default=16, help="clients paging the feed")
    p.add_argument("--latest", type=int, default=15, help="clients asking for a meter's latest readings")
    return p.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url_, key_, meters_, seconds_, feed_, latest_ = sys.argv[2:8]
        print(json.dumps(asyncio.run(worker(url_, key_, int(meters_), float(seconds_), int(feed_), int(latest_)))))
    else:
        asyncio.run(main(parse()))
