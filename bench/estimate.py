"""Benchmark: estimation of one 7-day gap for each of 10,000 meters (issue #24 item 13), by method.

    .venv/bin/python bench/estimate.py            # 10,000 meters
    .venv/bin/python bench/estimate.py --meters 1000

Each meter has its own hour-of-week profile (168 mean rates, as the validator keeps them) and a
15-minute register; its gap is 7 days less one interval (671 missing boundaries), the longest the
default limit (168 h) allows. Timed: `estimate_gap` as the validator calls it per gap, plus the
note each estimate is stored with; `linear` is the same gaps with the linear span set above them.
Data generation is not timed. One process, one core; wall and CPU seconds (the CPU figure is the
steadier one on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as on the edge box

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import speed
from gateway.validate.checks import US_PER_HOUR
from gateway.validate.estimate import estimate_gap

I15 = 900_000_000
T0 = 1_772_409_600_000_000  # 2026-03-02 00:00 UTC, a Monday


def run(meters: int, linear_us: float) -> tuple[float, float, int, set[str]]:
    rng = np.random.default_rng(7)
    profiles = rng.uniform(0.2, 2.0, (meters, 168))
    starts = T0 + I15 * rng.integers(0, 96, meters)
    t1s = starts + 168 * US_PER_HOUR
    made, methods = 0, set()
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(meters):
        est = estimate_gap(int(starts[i]), 1000.0, int(t1s[i]), 1100.0, interval_us=I15, modulus=float("nan"),
                           linear_us=linear_us, profile=profiles[i], max_us=168 * US_PER_HOUR)
        _ = est.note
        made += est.ts.size
        methods.add(est.method)
    return time.perf_counter() - began, time.process_time() - cpu, made, methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    args = parser.parse_args()
    print(speed())
    for name, linear_us in (("like_day", 3 * US_PER_HOUR), ("linear", 200 * US_PER_HOUR)):
        seconds, cpu, made, methods = run(args.meters, linear_us)
        print(f"{name:9s} {args.meters} meters x one 7-day gap: {seconds:.2f} s ({cpu:.2f} CPU s), {made} estimates "
              f"({made / seconds / 1e6:.2f} M/s), methods {sorted(methods)}")


if __name__ == "__main__":
    main()
