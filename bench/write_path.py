"""The write path alone on a busy event loop (issue 26, item 2). Not a test: prints figures.

    .venv/bin/python bench/write_path.py                     # 22,000 readings/s, loop 70 % busy, 30 s, SQLite
    .venv/bin/python bench/write_path.py --busy 0            # the same on an idle loop
    .venv/bin/python bench/write_path.py --catch-up 24       # larger writes while behind
    BENCH_GATEWAY_ROOT=../other-checkout .venv/bin/python bench/write_path.py   # another version's code

What `meter-gateway run` does with each pass of polls, without the polls: readings made (2,000 meters x
11 channels a second, in 20 passes a second) -> `Spool.append` (durable) -> `Forwarder` -> the store,
while a stand-in for the pollers and the pipeline keeps the event loop busy `--busy` of the time (slices
of `--slice` ms of pure Python). A store write or spool delete that returns to the loop between its
statements waits behind those slices each time: that, not SQLite, is what made the gateway fall behind
at 2,000 meters a second.

Prints readings made and committed per second (overall, and in each 10 s: the embedded store's cost per
row grows as its indexes fill, with 22,000 series each taking one row a second), committed / made, the
spool's backlog at the end and its highest, the forwarder's writes and their mean size, and this process' CPU per 1,000 readings committed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_GATEWAY_ROOT", str(Path(__file__).resolve().parents[1])))

from gateway.model import Batch, Channel, Kind, Reading
from storage.spool import Spool
from storage.spool.forwarder import CATCH_UP, Forwarder
from storage.sqlite.store import SqliteStore

CHANNELS = [c for c in Channel][:11]


async def busy_loop(share: float, slice_ms: float, stop: asyncio.Event) -> None:
    """Keep the loop busy `share` of the time, in slices of `slice_ms` of pure Python."""
    if share <= 0:
        return
    rest = slice_ms / 1000 * (1 - share) / share
    while not stop.is_set():
        end = time.perf_counter() + slice_ms / 1000
        while time.perf_counter() < end:
            sum(range(200))
        await asyncio.sleep(rest)


async def produce(spool: Spool, meters: int, passes: int, seconds: float, stop: asyncio.Event) -> int:
    """`meters` x 11 readings a second, in `passes` appends a second, each pass one slice of the meters."""
    made = 0
    per = meters // passes
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        due = start + k / passes
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        ts = datetime.fromtimestamp(int(start) + k // passes, UTC)
        received = datetime.now(UTC)
        first = (k % passes) * per
        readings = [Reading(f"M-{m:04d}", c, ts, float(m), Kind.INSTANTANEOUS, received_at=received)
                    for m in range(first, first + per) for c in CHANNELS]
        await spool.append(Batch(readings=readings))
        made += len(readings)
        k += 1
    stop.set()
    return made


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-write-path-") as tmp:
        store = await SqliteStore.open(Path(tmp) / "store.db")
        await store.migrate()
        async with Spool(Path(tmp) / "spool.db") as spool:
            forwarder = Forwarder(spool, store, batch_items=args.batch, linger=0.05, catch_up=args.catch_up)
            stop = asyncio.Event()
            highest = 0
            tens: list[int] = []  # readings committed in each 10 s

            async def watch() -> None:
                nonlocal highest
                mark, last = time.monotonic() + 10, 0
                while not stop.is_set():
                    highest = max(highest, spool.stats().items)
                    if time.monotonic() >= mark:
                        tens.append(forwarder.state.rows - last)
                        mark, last = mark + 10, forwarder.state.rows
                    await asyncio.sleep(0.2)

            cpu0, t0 = time.process_time(), time.monotonic()
            async with asyncio.TaskGroup() as tg:
                fwd = tg.create_task(forwarder.run())
                tg.create_task(busy_loop(args.busy, args.slice, stop))
                tg.create_task(watch())
                made = await produce(spool, args.meters, args.passes, args.duration, stop)
                wall = time.monotonic() - t0
                committed, backlog, writes = forwarder.state.rows, spool.stats().items, forwarder.state.batches
                cpu = time.process_time() - cpu0
                fwd.cancel()
        await store.close()
    rows = [
        ("readings made/s", f"{made / wall:,.0f}"),
        ("readings committed/s", f"{committed / wall:,.0f}"),
        ("committed / made", f"{committed / made:.3f}"),
        ("readings committed/s in each 10 s (the store slows as it fills)", " ".join(f"{n / 10:,.0f}" for n in tens)),
        ("spool backlog at the end / highest (items)", f"{backlog:,} / {highest:,}"),
        ("store writes, mean items a write", f"{writes:,}, {committed / max(writes, 1):,.0f}"),
        ("CPU s per 1,000 readings committed (this process, all threads)", f"{cpu / max(committed, 1) * 1000:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meters", type=int, default=2000)
    p.add_argument("--passes", type=int, default=20, help="appends a second (the pipeline's passes)")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--busy", type=float, default=0.7, help="share of the loop's time taken by the stand-in")
    p.add_argument("--slice", type=float, default=20.0, help="ms of each busy slice")
    p.add_argument("--batch", type=int, default=2000, help="spool.batch_size")
    p.add_argument("--catch-up", type=int, default=CATCH_UP,
                   help="how many times --batch one write may take while the forwarder is behind")
    a = p.parse_args()
    from bench.machine import speed

    print(speed())
    print(f"write path: {a.meters:,} meters x {len(CHANNELS)} channels a second in {a.passes} passes, loop "
          f"{a.busy:.0%} busy in {a.slice:g} ms slices, {a.duration:g} s, SQLite store, writes of up to "
          f"{a.batch:,} x {a.catch_up} items when behind")
    from gateway.runtime import eventloop

    eventloop.run(main(a))
