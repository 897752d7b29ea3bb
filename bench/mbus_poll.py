"""Benchmark: the wired M-Bus master against simulated slaves at 2400 baud (issue 18, item 9).

    .venv/bin/python bench/mbus_poll.py                 # 250 meters on 8 buses, 3 rounds
    .venv/bin/python bench/mbus_poll.py --quick         # 40 meters on 2 buses, 2 rounds

The slaves (water and heat meters, half each, heat meters answer in two telegrams) run in another
process behind 8 TCP ports, each paced as a 2400 baud line would be (11 bits a character, request
and answer). The gateway side is 8 `MBusPoller`s, every meter polled back to back (interval 0),
each read decoded and turned into readings through its object map. Printed: the time of a full
round (every meter read once) beside the physical limit of the bus (the bytes of one round at
2400 baud on the busiest bus, nothing else), and the gateway's CPU (its process, one core = 100 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.mbus.link import LinkSettings  # noqa: E402
from drivers.mbus.maps import object_maps  # noqa: E402
from drivers.mbus.poller import MBusPoller, MBusTarget  # noqa: E402
from gateway.model import Source  # noqa: E402
from gateway.model.samples import RawObjects, Sample  # noqa: E402
from gateway.normalise.objects import ObjectReader  # noqa: E402
from simulators.mbus.server import serve_tcp, wire_time  # noqa: E402
from simulators.mbus.slave import Bus, Slave, heat, water  # noqa: E402

BAUD = 2400


def fleet(bus_no: int, n: int) -> Bus:
    slaves: list[Slave] = []
    for i in range(n):
        address = i + 1
        slave = (heat if i % 2 else water)(address, 10_000_000 * (bus_no + 1) + address)
        if i % 2:
            slave.per_telegram = 4  # two telegrams: FCB toggling on every heat meter
        slaves.append(slave)
    return Bus(slaves)


def round_limit(bus: Bus) -> float:
    """Seconds one round of this bus takes on the wire: SND_NKE + E5, then REQ_UD2 + RSP_UD per telegram."""
    total = 0
    for s in bus.slaves:
        total += 5 + 1 + sum(5 + len(t) + 9 for t in s.telegrams())
    return wire_time(total, BAUD)


def serve(sizes: list[int], ports: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        servers = [await serve_tcp(fleet(b, n), baud=BAUD) for b, n in enumerate(sizes)]
        ports.put([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(sizes: list[int], rounds: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=serve, args=(sizes, queue), daemon=True)
    child.start()
    ports = queue.get(timeout=30)
    limit = max(round_limit(fleet(b, n)) for b, n in enumerate(sizes))
    maps = object_maps()
    readers = {name: ObjectReader(maps[name], Source.MBUS) for name in ("mbus_water", "mbus_heat")}
    reads: dict[str, int] = {}
    readings = 0
    done = asyncio.Event()
    total = sum(sizes)
    since = datetime.now(UTC) - timedelta(minutes=1)

    async def emit(sample: Sample) -> None:
        nonlocal readings
        if isinstance(sample, RawObjects) and sample.ts >= since:  # a read's current values (not a due-day value)
            meter = sample.meter_id
            readings += len(readers["mbus_heat" if meter.startswith("H") else "mbus_water"].read(sample).readings)
            reads[meter] = reads.get(meter, 0) + 1
            if len(reads) == total and min(reads.values()) >= rounds:
                done.set()

    pollers = []
    for b, (n, port) in enumerate(zip(sizes, ports, strict=True)):
        targets = [MBusTarget(f"{'H' if i % 2 else 'W'}-{b}-{i + 1}", i + 1, None, 0.0) for i in range(n)]
        pollers.append(MBusPoller(f"bus{b}", LinkSettings("tcp", "127.0.0.1", port), targets, emit, timeout=2.0))
    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    try:
        await asyncio.wait_for(done.wait(), timeout=max(600.0, limit * rounds * 3))
    finally:
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        child.terminate()
    polls = sum(reads.values())
    print(f"meters {total} on {len(sizes)} buses at {BAUD} baud, {rounds} round(s) each, back to back")
    print(f"full round:        {wall / rounds:7.2f} s   (physical limit of the busiest bus: {limit:.2f} s, "
          f"{wall / rounds / limit:.2f}x)")
    print(f"gateway CPU:       {100 * cpu / wall:7.1f} % of one core   ({1000 * cpu / max(polls, 1):.2f} ms per read, "
          f"{polls} reads, {readings} readings)")
    print("wire pacing:       11 bits a character, the request and the answer of every exchange")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    n, buses = (40, 2) if args.quick else (250, 8)
    sizes = [n // buses + (1 if b < n % buses else 0) for b in range(buses)]
    asyncio.run(run(sizes, args.rounds or (2 if args.quick else 3)))


if __name__ == "__main__":
    main()
