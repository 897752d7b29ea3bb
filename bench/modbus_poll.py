"""Benchmark: the Modbus poller against a simulated meter network in another process.

    .venv/bin/python bench/modbus_poll.py            # 1,000 SDM630 meters on 20 endpoints
    .venv/bin/python bench/modbus_poll.py --quick    # 200 meters on 4 endpoints, shorter runs

The simulator (`meter-gateway simulate modbus`, two processes by default) runs apart, so the CPU and memory
figures are the gateway's own: pollers + decoder, fed the way the pipeline feeds them (a
bounded queue drained in bursts; each burst's polls, however few, are decoded as one columnar
frame by `FrameDecoder` and turned into Reading objects, as the pipeline hands them to the
spool); `--vee` adds the validator. Spool and store are other benchmarks' business.

1. scheduled: every meter at a 1 s interval, aligned, for --duration s. Overruns (slots a poll
   ran into), p50/p99 poll latency (wire time of one poll) and lateness (boundary to data),
   CPU % of one core (and CPU seconds per 1,000 polls, steadier than % on a busy machine), polls
   per decode pass, and RSS of this process.
2. saturated: intervals of zero (each meter polls back to back). Sustained polls/s and
   values/s; then, against the same simulator, a bare pymodbus client loop doing the same reads
   over the same number of connections: our polls/s as a ratio of it.

Targets (issue #3): scheduled with 0 overruns under 50 % of one core; saturated >= 50 % of the
bare-client limit; RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from bench.gwproc import start_simulator  # noqa: E402
from bench.machine import speed  # noqa: E402
from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget, plan_reads  # noqa: E402
from drivers.samples import PollFailure, RawRegisters  # noqa: E402
from gateway.config.profiles import load_profiles  # noqa: E402
from gateway.model import Event, Reading  # noqa: E402
from gateway.model.profiles import DeviceProfile, Function  # noqa: E402
from gateway.normalise.frame import FrameDecoder, SeriesTable  # noqa: E402
from gateway.runtime import eventloop  # noqa: E402
from gateway.validate.validator import Validator  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU time of this process, from /proc/self/stat."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    cur = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return cur / 1024, peak / 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Sink:
    """The pipeline's first half: bounded queue -> decode -> validate -> readings, counting what comes out."""

    decoder: FrameDecoder
    validator: Validator | None
    queue: asyncio.Queue[RawRegisters | PollFailure | Event] = field(default_factory=lambda: asyncio.Queue(10_000))
    polls: int = 0
    passes: int = 0  # bursts taken off the queue that held a poll
    failures: int = 0
    values: int = 0
    deadletters: int = 0
    latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    recording: bool = False

    async def emit(self, item: RawRegisters | PollFailure | Event) -> None:
        await self.queue.put(item)

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < 5000:
                try:
                    items.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            polls = [item for item in items if isinstance(item, RawRegisters)]
            if self.recording:
                self.polls += len(polls)
                self.failures += sum(isinstance(item, PollFailure) for item in items)
                self.latencies.extend(p.latency_s for p in polls)
                self.lateness.extend((p.received_at - p.ts).total_seconds() for p in polls)
            if not polls:
                continue
            if self.recording:
                self.passes += 1
            readings, dead = self.decode(polls)
            if self.recording:
                self.deadletters += dead
                self.values += len(readings)

    def decode(self, polls: list[RawRegisters]) -> tuple[list[Reading], int]:
        """As Pipeline._readings does: (readings, dead letters)."""
        frame, dead_letters, _ = self.decoder.decode(polls)
        if self.validator is not None:
            frame, _ = self.validator.validate_frame(frame, ordered=True)
        return frame.to_readings(self.decoder.series), len(dead_letters)

    def reset(self) -> None:
        self.polls = self.passes = self.failures = self.values = self.deadletters = 0
        self.latencies.clear()
        self.lateness.clear()


async def start_simulators(meters: int, endpoints: int, procs: int) -> tuple[list[asyncio.subprocess.Process], list[int]]:
    """`procs` simulator processes, each serving an equal share of the endpoints (one core's worth
    of Python serves a few thousand requests a second: one process would measure itself)."""
    if endpoints % procs or meters % endpoints:
        msg = f"--sim-procs {procs} must divide --endpoints {endpoints}, and endpoints must divide meters {meters}"
        raise SystemExit(msg)
    started = [await start_simulator(meters // procs, endpoints // procs, "sdm630") for _ in range(procs)]
    return [p for p, _ in started], [port for _, ports in started for port in ports]


def layout(meters: int, endpoints: int) -> list[list[tuple[str, int]]]:
    """Which (meter id, unit) sit on each endpoint: the same blocks SimNetwork deals."""
    per = -(-meters // endpoints)
    ids = [f"M-{i:04d}" for i in range(1, meters + 1)]
    return [[(m, u) for u, m in enumerate(ids[k : k + per], 1)] for k in range(0, meters, per)]


async def measure(seconds: float, sink: Sink) -> dict[str, float]:
    sink.reset()
    sink.recording = True
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = cpu_seconds(), time.monotonic()
    sink.recording = False
    wall = wall1 - wall0
    return {"wall": wall, "cpu_s": cpu1 - cpu0, "cpu_pct": 100 * (cpu1 - cpu0) / wall, "polls_s": sink.polls / wall,
            "values_s": sink.values / wall}


async def run_pollers(profile: DeviceProfile, ports: list[int], groups: list[list[tuple[str, int]]],
                      interval: float, warmup: float, seconds: float, *,
                      vee: bool = False) -> tuple[dict[str, float], Sink, int]:
    profiles = {m: profile for g in groups for m, _ in g}
    validator = Validator() if vee else None
    decoder = FrameDecoder(profiles, validator.series if validator else SeriesTable())
    sink = Sink(decoder, validator)
    pollers = [
        ModbusPoller(ModbusEndpoint(f"gw-{k}", "127.0.0.1", port, timeout=1.0),
                     [PollTarget(m, u, profile, interval) for m, u in group], sink.emit)
        for k, (port, group) in enumerate(zip(ports, groups, strict=True))
    ]
    async with asyncio.TaskGroup() as tg:
        consumer = tg.create_task(sink.run())
        tasks = [tg.create_task(p.run()) for p in pollers]
        await asyncio.sleep(warmup)
        skipped0 = sum(h.skipped for p in pollers for h in p.health().values())
        figures = await measure(seconds, sink)
        skipped = sum(h.skipped for p in pollers for h in p.health().values()) - skipped0
        for t in (*tasks, consumer):
            t.cancel()
    return figures, sink, skipped


async def bare_clients(profile: DeviceProfile, ports: list[int], groups: list[list[tuple[str, int]]],
                       warmup: float, seconds: float) -> float:
    """The same reads with plain pymodbus clients, one per endpoint, as fast as they go."""
    plan = plan_reads(profile)
    done = 0
    counting = False

    async def loop(client: AsyncModbusTcpClient, units: list[int]) -> None:
        nonlocal done
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():  # pymodbus' wait_for may swallow a cancel
                raise asyncio.CancelledError
            for unit in units:
                for block in plan:
                    call = (client.read_input_registers if block.function is Function.INPUT
                            else client.read_holding_registers)
                    await call(block.address, count=block.count, device_id=unit)
                if counting:
                    done += 1

    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0) for port in ports]
    try:
        for c in clients:
            await c.connect()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(loop(c, [u for _, u in g])) for c, g in zip(clients, groups, strict=True)]
            await asyncio.sleep(warmup)
            counting = True
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            rate = done / (time.monotonic() - t0)
            for t in tasks:
                t.cancel()
    finally:
        for c in clients:
            c.close()
    return rate


async def main(args: argparse.Namespace) -> None:
    profile = load_profiles()["sdm630"]
    groups = layout(args.meters, args.endpoints)
    n_values = len(profile.registers)
    reads = len(plan_reads(profile))
    print(f"meters {args.meters} (sdm630, {n_values} channels, {reads} reads per poll) on {args.endpoints} "
          f"endpoints; gateway = pollers + decoder{' + validator' if args.vee else ''}; simulator in "
          f"{args.sim_procs} separate process(es); load before: {Path('/proc/loadavg').read_text().strip()}")
    sims, ports = await start_simulators(args.meters, args.endpoints, args.sim_procs)
    rows: list[tuple[str, str]] = []
    try:
        sched, sink, skipped = await run_pollers(profile, ports, groups, 1.0, args.warmup, args.duration,
                                                 vee=args.vee)
        rss, peak = rss_mb()
        rows += [
            ("scheduled: polls/s (1 s interval)", f"{sched['polls_s']:.0f}"),
            ("scheduled: overruns", f"{skipped}"),
            ("scheduled: failed polls", f"{sink.failures}"),
            ("scheduled: poll latency p50 / p99 (ms)",
             f"{1000 * pct(sink.latencies, 50):.1f} / {1000 * pct(sink.latencies, 99):.1f}"),
            ("scheduled: boundary -> data p50 / p99 (ms)",
             f"{1000 * pct(sink.lateness, 50):.0f} / {1000 * pct(sink.lateness, 99):.0f}"),
            ("scheduled: gateway CPU (% of one core)", f"{sched['cpu_pct']:.0f}"),
            ("scheduled: gateway CPU s per 1000 polls", f"{sched['cpu_s'] / max(sink.polls, 1) * 1000:.3f}"),
            ("scheduled: polls per decode pass", f"{sink.polls / max(sink.passes, 1):.1f}"),
            ("scheduled: gateway RSS now / peak (MB)", f"{rss:.0f} / {peak:.0f}"),
        ]
        sat, sink, _ = await run_pollers(profile, ports, groups, 0.0, args.warmup / 2, args.saturated, vee=args.vee)
        bare = await bare_clients(profile, ports, groups, args.warmup / 2, args.saturated)
        rss, peak = rss_mb()
        rows += [
            ("saturated: polls/s", f"{sat['polls_s']:.0f}"),
            ("saturated: values/s", f"{sat['values_s']:.0f}"),
            ("saturated: gateway CPU (% of one core)", f"{sat['cpu_pct']:.0f}"),
            ("saturated: bare pymodbus polls/s", f"{bare:.0f}"),
            ("saturated: ours / bare", f"{sat['polls_s'] / bare:.2f}"),
            ("RSS now / peak (MB)", f"{rss:.0f} / {peak:.0f}"),
        ]
    finally:
        for sim in sims:
            sim.send_signal(signal.SIGINT)
        for sim in sims:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sim.wait(), 20)
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 meters on 4 endpoints, short runs (under a minute)")
    p.add_argument("--meters", type=int)
    p.add_argument("--endpoints", type=int)
    p.add_argument("--duration", type=float, help="scheduled run, seconds (default 60)")
    p.add_argument("--saturated", type=float, help="each saturated run, seconds (default 20)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 5)")
    p.add_argument("--vee", action="store_true", help="also run the validator on every batch")
    p.add_argument("--sim-procs", type=int, default=2, help="simulator processes sharing the endpoints (default 2)")
    a = p.parse_args(argv)
    print(speed())
    quick = {"meters": 200, "endpoints": 4, "duration": 15.0, "saturated": 8.0, "warmup": 3.0}
    full = {"meters": 1000, "endpoints": 20, "duration": 60.0, "saturated": 20.0, "warmup": 5.0}
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    return a


if __name__ == "__main__":
    # On the gateway's event loop (uvloop, start-up heap frozen), as `meter-gateway run` polls;
    # the bare pymodbus loop of the saturated run shares it, so their ratio compares like with like.
    eventloop.run(main(parse()))
