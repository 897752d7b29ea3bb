"""Capacity of a whole gateway at saturation (issue 26, items 2 and 3). Not a test: prints figures.

    .venv/bin/python bench/capacity.py                      # 2,000 meters at 1 s, embedded SQLite store
    .venv/bin/python bench/capacity.py --store timescale    # the same into a private TimescaleDB
    .venv/bin/python bench/capacity.py --meters 500 --endpoints 10 --duration 30

The project's Modbus simulator serves `--meters` meters (`--endpoints` endpoints, units 1.. on each) in its
own process; a real gateway (`meter-gateway run` with a generated configuration) polls every meter every
`--interval` seconds. After `--warmup` seconds, over `--duration` seconds, from outside the gateway:

  polls/s, failed polls, slots skipped    /metrics (meter_gateway_polls, meter_gateway_poll_overruns)
  values read/s                           readings the pipeline accepted into the spool (/metrics)
  rows committed/s                        readings the store committed (its own tables, read from here by seq)
  committed / read                        the ratio of those two over the window
  commit latency p50 / p99                a reading's timestamp (its poll slot) -> seen committed in the
                                          store, looked at every --look seconds (so up to that much late);
                                          and from its received_at (the poll's answer) -> committed: the
                                          write path alone, without the wait for the meter's turn on its link
  spool backlog                           meter_gateway_spool_items at the end, and its highest
  CPU                                     per process of the gateway (all processes `meter-gateway run`
                                          started), the simulator's, this process', and the machine's

The machine is shared: the load before and after is printed, with the machine's whole CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.gwproc import (
    CpuWatch,
    StoreWatch,
    create_key,
    free_port,
    metric_sum,
    parse_metrics,
    start_gateway,
    start_simulator,
    stop,
    timescale,
    weighted_pct,
    write_config,
)
from bench.machine import speed

POLLS = "meter_gateway_polls_total"
READ = "meter_gateway_readings_status_total"
SKIPPED = "meter_gateway_poll_overruns_total"
SPOOL = "meter_gateway_spool_items"
QUEUE = "meter_gateway_pipeline_queue_items"


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    resp = await client.get("/metrics", timeout=30)
    resp.raise_for_status()
    return parse_metrics(resp.text)


async def run(args: argparse.Namespace, dsn: str | None, server: int | None) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        data = Path(tmp)
        sim, ports = await start_simulator(args.meters, args.endpoints, args.profile)
        gw = None
        try:
            api_port = free_port()
            config = write_config(data, ports, args.meters, profile=args.profile, interval=args.interval,
                                  store=args.store, dsn=dsn, api_port=api_port)
            key = await asyncio.to_thread(create_key, config)
            url = f"http://127.0.0.1:{api_port}"
            gw = await start_gateway(config, data / "gateway.log", url)
            watch = StoreWatch(args.store, sqlite_path=data / "store.db", dsn=dsn)
            watch.open()
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
                await asyncio.sleep(args.warmup)
                cpu, sim_cpu, own = CpuWatch(gw.pid, threads=args.threads), CpuWatch(sim.pid), CpuWatch(os.getpid(), tree=False)
                pg = CpuWatch(server or os.getpid(), tree=server is not None)
                m0 = await scrape(client)
                watch.look()  # what was committed before the window is not counted
                for w in (cpu, sim_cpu, own, pg):
                    w.start()
                t0 = time.monotonic()
                latency: dict[float, int] = {}
                write_path: dict[float, int] = {}
                first: dict[float, int] = {}
                last: dict[float, int] = {}
                committed = spool_max = queue_max = scraped = 0
                while (elapsed := time.monotonic() - t0) < args.duration:
                    await asyncio.sleep(args.look)
                    when, groups = await asyncio.to_thread(watch.look)
                    for tenth, n in watch.received.items():
                        lag = round(when - tenth, 1)
                        write_path[lag] = write_path.get(lag, 0) + n
                    for second, n in groups.items():
                        lag = round(when - second, 1)
                        latency[lag] = latency.get(lag, 0) + n
                        part = first if elapsed < args.duration / 6 else last if elapsed > args.duration * 5 / 6 else None
                        if part is not None:
                            part[lag] = part.get(lag, 0) + n
                        committed += n
                    scraped, due = (scraped + 1) % args.scrape_every, scraped == 0
                    if not due:
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        m = await scrape(client)
                        spool_max = max(spool_max, int(m.get(SPOOL, 0)))
                        queue_max = max(queue_max, int(m.get(QUEUE, 0)))
                wall = time.monotonic() - t0
                m1 = await scrape(client)
                for w in (cpu, sim_cpu, own, pg):
                    w.stop()
            watch.close()
            gw_pct = sum(v for k, v in cpu.result.items() if not k.startswith("  "))
            pg_pct = sum(pg.result.values()) if server else 0.0
            polls = metric_sum(m1, POLLS, result="ok") - metric_sum(m0, POLLS, result="ok")
            failed = metric_sum(m1, POLLS, result="!ok") - metric_sum(m0, POLLS, result="!ok")
            read = metric_sum(m1, READ) - metric_sum(m0, READ)
            rows += [
                ("window (s)", f"{wall:.1f}"),
                ("polls/s", f"{polls / wall:.0f}"),
                ("failed polls", f"{failed:.0f}"),
                ("slots skipped", f"{metric_sum(m1, SKIPPED) - metric_sum(m0, SKIPPED):.0f}"),
                ("values read/s (accepted into the spool)", f"{read / wall:.0f}"),
                ("rows committed/s (readings in the store)", f"{committed / wall:.0f}"),
                ("committed / read", f"{committed / max(read, 1):.3f}"),
                ("commit latency p50 / p99 (s)", f"{weighted_pct(latency, 50):.1f} / {weighted_pct(latency, 99):.1f}"),
                ("  answer received -> committed (the write path alone) p50 / p99 (s)",
                 f"{weighted_pct(write_path, 50):.1f} / {weighted_pct(write_path, 99):.1f}"),
                ("  first sixth of the window p50 / p99 (s)", f"{weighted_pct(first, 50):.1f} / {weighted_pct(first, 99):.1f}"),
                ("  last sixth of the window p50 / p99 (s)", f"{weighted_pct(last, 50):.1f} / {weighted_pct(last, 99):.1f}"),
                ("spool backlog at the end / highest (items)", f"{int(m1.get(SPOOL, 0)):,} / {spool_max:,}"),
                ("pipeline queue highest (samples)", f"{queue_max:,}"),
                *cpu.rows(),
                (f"CPU % of one core: simulator [{sim.pid}]", f"{sum(sim_cpu.result.values()):.0f}"),
                ("CPU % of one core: this bench", f"{sum(own.result.values()):.0f}"),
                *([("CPU % of one core: PostgreSQL (all its processes)", f"{pg_pct:.0f}")] if server else []),
                ("gateway CPU s per 1,000 values committed (steadier than % on a shared machine)",
                 f"{gw_pct / 100 * wall / max(committed, 1) * 1000:.3f}"),
                ("CPU % of one core: everything else on the machine",
                 f"{cpu.machine_pct - gw_pct - sum(sim_cpu.result.values()) - sum(own.result.values()) - pg_pct:.0f}"),
                (f"CPU % of one core: whole machine ({os.cpu_count()} cores)", f"{cpu.machine_pct:.0f}"),
            ]
        finally:
            if gw is not None:
                await stop(gw)
            await stop(sim, sig=2)
        if args.show_log:
            print((data / "gateway.log").read_text()[-3000:])
    return rows


async def main(args: argparse.Namespace) -> None:
    print(speed())
    print(f"capacity: {args.meters:,} meters ({args.profile}) on {args.endpoints} endpoints every {args.interval:g} s, "
          f"store {args.store}; warm-up {args.warmup:g} s, window {args.duration:g} s")
    if args.store == "timescale":
        async with timescale() as (dsn, server):
            rows = await run(args, dsn, server)
    else:
        rows = await run(args, None, None)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=2000)
    p.add_argument("--endpoints", type=int, default=20)
    p.add_argument("--profile", default="sdm630")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval of every meter, seconds")
    p.add_argument("--store", choices=("sqlite", "timescale"), default="sqlite")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--look", type=float, default=0.5, help="seconds between looks at the store")
    p.add_argument("--scrape-every", type=int, default=10, help="looks at the store between scrapes of /metrics")
    p.add_argument("--threads", action="store_true", help="CPU per thread of the gateway's processes too")
    p.add_argument("--show-log", action="store_true", help="print the end of the gateway's log")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
