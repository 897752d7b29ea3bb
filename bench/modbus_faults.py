"""Benchmark: a fair bus under faults (issue 19 item 3). Healthy meters' poll rate on a clean bus
against the same bus with a timing-out, a slow and an exception-answering meter on it.

    .venv/bin/python bench/modbus_faults.py                 # 60 s per bus
    .venv/bin/python bench/modbus_faults.py --duration 20

One simulated RS-485 bus (a pymodbus server, `SimFleet`, Modbus TCP on 127.0.0.1) with 10 meters of
the `generic` profile, all polled by one `ModbusPoller` at a 1 s interval (endpoint timeout 1 s, one
retry, the default breaker). The clean bus has 10 healthy meters; the faulty bus has 7 healthy ones
and M-0008 that never answers ("timeout"), M-0009 that answers after 0.3 s ("slow") and M-0010 that
answers exception 4 ("exception"). Polls are counted by the simulator (requests per unit over the
blocks of a poll) after a warm-up of 3 s; overruns are the slots the poller skipped.

Target: the healthy meters' polls/s on the faulty bus equal to the clean bus's (1.0/s each, at a
1 s interval), and no overruns for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget, plan_reads  # noqa: E402
from drivers.samples import PollFailure, RawRegisters  # noqa: E402
from gateway.config.profiles import load_profiles  # noqa: E402
from gateway.model import Event  # noqa: E402
from simulators.modbus import SimFleet  # noqa: E402

FAULTS = {"M-0008": ("timeout", {}), "M-0009": ("slow", {"delay": 0.3}), "M-0010": ("exception", {"exception_code": 4})}
WARMUP = 3.0


@dataclass
class Figures:
    healthy_polls_per_s: float  # per healthy meter
    healthy_overruns: int
    faulty_polls: dict[str, int]
    faulty_requests: dict[str, int]


async def _drop(_: RawRegisters | PollFailure | Event) -> None:
    return None


async def run_bus(faulty: bool, duration: float, interval: float = 1.0) -> Figures:
    profile = load_profiles()["generic"]
    blocks = len(plan_reads(profile))
    async with SimFleet(profile, 10, update_interval=None) as fleet:
        if faulty:
            for meter_id, (fault, params) in FAULTS.items():
                fleet.set_fault(meter_id, fault, **params)  # type: ignore[arg-type]
        endpoint = ModbusEndpoint("bus", "127.0.0.1", fleet.port, timeout=1.0, retries=1)
        targets = [PollTarget(m.meter_id, unit, profile, interval) for unit, m in fleet.meters.items()]
        poller = ModbusPoller(endpoint, targets, _drop)
        task = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(WARMUP)
            before = dict(fleet.requests_by_unit)
            health_before = poller.health()
            started = time.monotonic()
            await asyncio.sleep(duration)
            elapsed = time.monotonic() - started
            after = dict(fleet.requests_by_unit)
            health = poller.health()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        units = {m.meter_id: unit for unit, m in fleet.meters.items()}
        polls = {m: (after.get(u, 0) - before.get(u, 0)) / blocks for m, u in units.items()}
        healthy = [m for m in units if not faulty or m not in FAULTS]
        return Figures(
            healthy_polls_per_s=sum(polls[m] for m in healthy) / len(healthy) / elapsed,
            healthy_overruns=sum(health[m].skipped - health_before[m].skipped for m in healthy),
            faulty_polls={m: health[m].polls - health_before[m].polls for m in FAULTS} if faulty else {},
            faulty_requests={m: after.get(units[m], 0) - before.get(units[m], 0) for m in FAULTS} if faulty else {},
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per bus (after a 3 s warm-up)")
    args = parser.parse_args()
    clean = await run_bus(False, args.duration)
    faulty = await run_bus(True, args.duration)
    print(f"bus of 10 generic meters, 1 s interval, timeout 1 s, 1 retry; {args.duration:g} s measured per bus")
    print(f"clean bus:  healthy polls/s per meter {clean.healthy_polls_per_s:.3f}, overruns {clean.healthy_overruns}")
    print(f"faulty bus: healthy polls/s per meter {faulty.healthy_polls_per_s:.3f}, overruns {faulty.healthy_overruns}"
          f" (7 healthy beside a timing-out, a slow (0.3 s) and an exception-answering meter)")
    for meter_id, (fault, _) in FAULTS.items():
        print(f"  {meter_id} ({fault}): {faulty.faulty_polls[meter_id]} polls tried, "
              f"{faulty.faulty_requests[meter_id]} requests on the bus")


if __name__ == "__main__":
    asyncio.run(main())
