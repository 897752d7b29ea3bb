"""Benchmark: CPU time of one decode pass of a few SDM630 polls, as the Modbus pipeline runs it.

    .venv/bin/python bench/decode_pass.py                          # passes of 1, 2, 4, 16 and 256 polls
    .venv/bin/python bench/decode_pass.py --sizes 1 --passes 20000
    BENCH_GATEWAY_ROOT=../other-checkout .venv/bin/python bench/decode_pass.py   # another version's code

At saturation `bench/modbus_poll.py` hands the decoder one or two polls per pass, so the per-pass fixed
cost (numpy calls, not values) decides its throughput; this measures that cost alone, without the
network and the pollers' own CPU: `FrameDecoder.decode` then `ReadingFrame.to_readings`, what its
Sink does with each pass. The polls are 200 meters' float32 register images with a household's
values (volts, amps, W, power factor, Hz, kWh), made with numpy from a fixed seed, so every
checkout decodes the same words.

Prints CPU µs per pass and per poll (best of --repeat runs, process CPU time: steadier than wall time
on a shared machine, though a loaded machine still slows caches). For counts that do not move with
the load, count instructions with callgrind: the timed passes, and only they, run inside
`functools.reduce`, so callgrind can collect them alone (the count it prints, over --passes):

    valgrind --tool=callgrind --toggle-collect=functools_reduce --callgrind-out-file=/dev/null \
        .venv/bin/python bench/decode_pass.py --sizes 1 --passes 1000 --repeat 1
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_GATEWAY_ROOT", str(Path(__file__).resolve().parents[1])))

import numpy as np

from drivers.modbus.plan import plan_reads
from drivers.samples import RawRegisters, RegisterBlock
from gateway.config.profiles import load_profiles
from gateway.normalise.frame import FrameDecoder, SeriesTable

METERS = 200
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def polls(count: int, seed: int = 1) -> list[RawRegisters]:
    """`count` polls of METERS SDM630 meters in turn, each with its own values."""
    profile = load_profiles()["sdm630"]
    rng = np.random.default_rng(seed)
    typical = {"voltage": (230.0, 2.0), "current": (8.0, 4.0), "power_factor": (0.95, 0.02),
               "power": (2500.0, 1500.0), "frequency": (50.0, 0.02), "energy_import": (12000.0, 6000.0),
               "energy_export": (800.0, 400.0)}
    width = max(b.address + b.count for b in plan_reads(profile))
    words = np.zeros((count, width), dtype=np.uint16)
    for spec in profile.registers:
        name = spec.channel.value
        mean, spread = next(v for k, v in typical.items() if name.startswith(k))
        values = np.abs(rng.normal(mean, spread, count)).astype(">f4")
        words[:, spec.address:spec.address + 2] = values.view(">u2").reshape(count, 2)
    rows = words.tolist()
    out = []
    for i, row in enumerate(rows):
        ts = T0 + timedelta(seconds=i // METERS)
        blocks = tuple(RegisterBlock(b.function.code, b.address, tuple(row[b.address:b.address + b.count]))
                       for b in plan_reads(profile))
        out.append(RawRegisters(f"M-{i % METERS + 1:04d}", ts, ts + timedelta(milliseconds=i % 997), blocks, 0.01))
    return out


def run(size: int, passes: int) -> float:
    """CPU seconds of `passes` passes of `size` polls each (decode, then Reading objects)."""
    profile = load_profiles()["sdm630"]
    decoder = FrameDecoder({f"M-{i:04d}": profile for i in range(1, METERS + 1)}, SeriesTable())
    made = polls(max(size, METERS))
    batches = [made[i:i + size] for i in range(0, len(made) - size + 1, size)]
    for batch in batches:  # every meter's series ids and the plan, made before timing
        decoder.decode(batch)

    def one(_: None, batch: list[RawRegisters]) -> None:
        frame, _dead, _events = decoder.decode(batch)
        frame.to_readings(decoder.series)

    start = time.process_time()
    functools.reduce(one, (batches[k % len(batches)] for k in range(passes)), None)  # see the docstring
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 16, 256], help="polls per pass")
    parser.add_argument("--passes", type=int, default=None, help="passes per run (default: about 5,000 polls)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size; the best is printed")
    args = parser.parse_args()
    root = os.environ.get("BENCH_GATEWAY_ROOT", str(Path(__file__).resolve().parents[1]))
    print(f"code: {root}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'polls/pass':>10} {'passes':>7} {'CPU µs/pass':>12} {'CPU µs/poll':>12}")
    for size in args.sizes:
        passes = args.passes or max(20, 5000 // size)
        best = min(run(size, passes) for _ in range(args.repeat))
        print(f"{size:>10} {passes:>7} {best / passes * 1e6:>12.1f} {best / passes / size * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
