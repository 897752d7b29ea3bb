"""P1 ingest benchmark (issue 18, item 9): 100 DSMR 5 meters each sending a telegram every second
on its own TCP port (as ser2net serves P1 cables), read by `meter-gateway run` into its SQLite
store. Not a test: prints the gateway's CPU share of one core (target under 20 %).

    .venv/bin/python bench/p1.py                 # 100 streams at 1 s, 60 s measured after 15 s warm-up
    .venv/bin/python bench/p1.py --streams 20 --seconds 20

The simulator runs in its own process (`bench/p1.py --serve N`), so the gateway's CPU (its whole
process tree, from /proc) is its own. Each telegram gives 9 readings (two import and two export
tariffs, both totals, power, voltage, current). "stored/s" counts readings the store committed
while measuring: a gateway that keeps up stores ~9 x streams per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gwproc import CpuWatch, free_port, start_gateway, stop
from bench.machine import speed


async def serve(n: int, interval: float) -> None:
    """The simulator process: n P1 meters on n TCP ports; prints the ports, then "ready"."""
    from simulators.p1.meter import SimP1Meter
    from simulators.stream import TelegramServer

    async with contextlib.AsyncExitStack() as stack:
        for i in range(n):
            meter = SimP1Meter(equipment=f"E{i:016d}", clock=datetime.now(UTC).replace(microsecond=0))
            server = await stack.enter_async_context(TelegramServer(meter.telegram, interval=interval))
            print(server.port, flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()


def write_config(data: Path, ports: list[int], api_port: int) -> Path:
    lines = ["[gateway]", 'id = "bench-p1"', f'data_dir = "{data}"', 'log_level = "warning"', "",
             "[api]", 'host = "127.0.0.1"', f"port = {api_port}", ""]
    for i, port in enumerate(ports):
        lines += ["[[p1.ports]]", f'name = "p1-{i:03d}"', f'tcp = "127.0.0.1:{port}"', ""]
    for i in range(len(ports)):
        lines += ["[[meters]]", f'meter_id = "E-{i:03d}"', 'protocol = "p1"', f'port = "p1-{i:03d}"', ""]
    path = data / "gateway.toml"
    path.write_text("\n".join(lines))
    return path


def stored(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
        return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])


async def main(args: argparse.Namespace) -> None:
    sim = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", str(args.streams),
                                               "--interval", str(args.interval), stdout=asyncio.subprocess.PIPE)
    assert sim.stdout is not None
    ports: list[int] = []
    while True:
        line = (await sim.stdout.readline()).decode().strip()
        if line == "ready" or not line:
            break
        ports.append(int(line))
    with tempfile.TemporaryDirectory(prefix="bench-p1-") as tmp:
        data = Path(tmp)
        api_port = free_port()
        config = write_config(data, ports, api_port)
        gw = await start_gateway(config, data / "gateway.log", f"http://127.0.0.1:{api_port}")
        try:
            await asyncio.sleep(args.warmup)
            before = stored(data / "store.db")
            cpu = CpuWatch(gw.pid)
            cpu.start()
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu.stop()
            wall = time.monotonic() - t0
            after = stored(data / "store.db")
        finally:
            await stop(gw)
            sim.terminate()
            await sim.wait()
    total = sum(v for k, v in cpu.result.items() if not k.startswith("  "))
    print(speed())
    print(f"P1 streams: {args.streams} at {args.interval:g} s, measured {wall:.0f} s after {args.warmup:g} s warm-up")
    for k, v in cpu.result.items():
        print(f"  CPU % of one core: {k.strip():<40} {v:5.1f}")
    print(f"  gateway CPU % of one core (all processes): {total:.1f}  (target < 20)")
    print(f"  readings stored/s: {(after - before) / wall:.0f}  (keeping up: ~{9 * args.streams / args.interval:.0f})")
    print(f"  machine busy % of one core (everything): {cpu.machine_pct:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args.serve, args.interval) if args.serve else main(args))
