"""Benchmark: readings per second through normalise + validate (VEE), vectorised vs naive.

    .venv/bin/python bench/vee.py            # 10 M readings over 10,000 meters; naive on 1 M
    .venv/bin/python bench/vee.py --quick    # 1 M over 2,000 meters; naive on 100 k (under a minute)

Meters are the generic float32 profile (7 registers + a status word) polled every 15 min; the
polls of a round reach the pipeline in batches of 5000 (its `max_batch`), which is what is
measured: `FrameDecoder.decode` (all polls of a batch at once) then `Validator.validate_frame`.
A few faults keep every path busy: regressions, persistent spikes, missed polls (gaps, then
estimates), garbage words (dead letters), tamper bits.

The pipeline row runs the same batches through `Pipeline.process` end to end (normalise, validate,
the `list[Reading]` the spool takes, the pipeline's counters) with a spool STAND-IN that only counts
what it is handed: no encoding, no disk, no fsync. It is the gateway's ceiling before storage.

The naive baseline runs the same checks one reading at a time: `Normaliser.registers` per poll
(struct decoding) and `ReferenceValidator` per reading, on the same kind of data. Its speed is
compared with the vectorised path on the *same* readings (same meters, same rounds), so history
depth and fault mix match. Data generation is not timed. One process, one core.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as on the edge box

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import speed
from drivers.modbus.plan import plan_reads
from drivers.samples import RawRegisters, RegisterBlock
from gateway.config.profiles import load_profiles
from gateway.model import Batch, Channel
from gateway.model.profiles import DeviceFlag
from gateway.normalise.frame import FrameDecoder
from gateway.normalise.normaliser import Normaliser
from gateway.runtime.pipeline import Item, Pipeline
from gateway.validate.cross import CrossChecks
from gateway.validate.reference import ReferenceValidator
from gateway.validate.validator import Validator

T0 = datetime(2026, 3, 2, tzinfo=UTC)
INTERVAL = 900.0
BATCH = 5000  # Pipeline.max_batch


class Fleet:
    """`n` meters whose registers move like households (daily curve, some solar), numpy throughout."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self.profile = load_profiles()["generic"]
        self.plan = plan_reads(self.profile)
        self.rng = np.random.default_rng(seed)
        self.ids = [f"M-{i:05d}" for i in range(n)]
        self.n = n
        self.base = self.rng.uniform(0.3, 1.5, n)
        self.pv = np.where(self.rng.random(n) < 0.2, self.rng.uniform(1.0, 4.0, n), 0.0)
        self.imp = self.rng.uniform(1_000, 20_000, n)
        self.exp = np.zeros(n)
        self.rounds = 0
        width = 0
        for block in self.plan:
            width = max(width, block.address + block.count)
        self.width = width

    def round(self) -> list[RawRegisters]:
        """One poll of every meter at the next boundary (a few meters miss it)."""
        rng, n = self.rng, self.n
        r = self.rounds
        self.rounds += 1
        ts = T0 + timedelta(seconds=r * INTERVAL)
        hour = (r * INTERVAL % 86400) / 3600
        curve = 0.35 + 0.55 * math.exp(-(((hour - 7.5) / 1.5) ** 2)) + 0.9 * math.exp(-(((hour - 19.5) / 2.0) ** 2))
        power = self.base * curve * np.maximum(0.2, rng.normal(1.0, 0.1, n)) - \
            self.pv * max(0.0, math.sin(math.pi * (hour - 6) / 12))
        self.imp += np.maximum(power, 0) * INTERVAL / 3600
        self.exp += np.maximum(-power, 0) * INTERVAL / 3600
        self.imp[rng.random(n) < 0.0005] += 20.0  # a persistent spike
        reported = self.imp - np.where(rng.random(n) < 0.0005, 10.0, 0.0)  # a one-read regression
        values = {
            Channel.ENERGY_IMPORT: reported, Channel.ENERGY_EXPORT: self.exp, Channel.POWER: power,
            Channel.VOLTAGE_L1: rng.normal(230, 1.5, n), Channel.CURRENT_L1: np.abs(power) * 1000 / 218.5,
            Channel.FREQUENCY: rng.normal(50, 0.02, n), Channel.POWER_FACTOR: np.clip(rng.normal(0.95, 0.01, n), 0.5, 1),
        }
        words = np.zeros((n, self.width), dtype=np.uint16)
        for spec in self.profile.registers:
            words[:, spec.address:spec.address + 2] = values[spec.channel].astype(">f4").view(">u2").reshape(n, 2)
        for flag in self.profile.flags:
            if flag.flag is DeviceFlag.TAMPER:  # the same data as before the relay bit existed
                words[:, flag.address] = np.where(rng.random(n) < 0.0001, 1 << flag.bit, 0)
        words[rng.random(n) < 0.0002] = 0xFFFF  # garbage: NaN floats, dead letters
        received = ts + timedelta(seconds=2)
        rows = words.tolist()
        present = np.flatnonzero(rng.random(n) >= 0.001)  # 0.1 % of polls never arrive: gaps
        out = []
        for i in present.tolist():
            row = rows[i]
            blocks = tuple(RegisterBlock(b.function.code, b.address, tuple(row[b.address:b.address + b.count]))
                           for b in self.plan)
            out.append(RawRegisters(self.ids[i], ts, received, blocks, 0.01))
        return out


def batches(fleet: Fleet, rounds: int) -> Iterator[list[RawRegisters]]:
    for _ in range(rounds):
        polls = fleet.round()
        for i in range(0, len(polls), BATCH):
            yield polls[i:i + BATCH]


def validator_for(fleet: Fleet) -> Validator:
    return Validator({(m, c): 1e8 for m in fleet.ids for c in (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT)},
                     intervals=dict.fromkeys(fleet.ids, INTERVAL), bidirectional=fleet.ids)


Timing = tuple[int, float, float]  # readings, wall seconds, CPU seconds


def vectorised(meters: int, rounds: int, *, cross: bool = False) -> Timing:
    """`cross`: the checks across series (issue 24: TOU sums, usage while disconnected) after the
    validator, as the pipeline runs them; a tenth of the meters are inactive, so that path works."""
    fleet = Fleet(meters)
    validator = validator_for(fleet)
    across = CrossChecks(validator, inactive=fleet.ids[::10]) if cross else None
    decoder = FrameDecoder(dict.fromkeys(fleet.ids, fleet.profile), validator.series)
    readings, wall, cpu = 0, 0.0, 0.0
    for batch in batches(fleet, rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        frame, _dead, _events = decoder.decode(batch)
        frame, _found = validator.validate_frame(frame)
        if across is not None:
            across.check_frame(frame)
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        readings += len(frame)
    return readings, wall, cpu


class CountingSpool:
    """Stand-in for the spool: counts the batches and readings it is handed, writes nothing."""

    def __init__(self) -> None:
        self.batches = 0
        self.readings = 0

    async def append(self, batch: Batch) -> int:
        self.batches += 1
        self.readings += len(batch.readings)
        return self.batches


def pipeline(meters: int, rounds: int) -> Timing:
    fleet = Fleet(meters)
    spool = CountingSpool()
    pipe = Pipeline(Normaliser(dict.fromkeys(fleet.ids, fleet.profile), {}), validator_for(fleet), spool)

    async def run() -> tuple[float, float]:
        wall, cpu = 0.0, 0.0
        for batch in batches(fleet, rounds):
            items = list[Item](batch)
            start, start_cpu = time.perf_counter(), time.process_time()
            await pipe.process(items)
            wall += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
        return wall, cpu

    wall, cpu = asyncio.run(run())
    return spool.readings, wall, cpu


def naive(meters: int, rounds: int) -> Timing:
    fleet = Fleet(meters)
    validator = validator_for(fleet)
    reference = ReferenceValidator(validator.settings)
    normaliser = Normaliser(dict.fromkeys(fleet.ids, fleet.profile), {})
    readings, wall, cpu = 0, 0.0, 0.0
    for batch in batches(fleet, rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = []
        for raw in batch:
            rows.extend(normaliser.registers(raw).readings)
        reference.validate(rows)
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        readings += len(rows)
    return readings, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 M readings over 2,000 meters; naive on 100 k")
    parser.add_argument("--meters", type=int, default=None)
    parser.add_argument("--readings", type=int, default=None, help="vectorised run size")
    parser.add_argument("--naive-readings", type=int, default=None)
    args = parser.parse_args()
    print(speed())
    meters = args.meters or (2_000 if args.quick else 10_000)
    total = args.readings or (1_000_000 if args.quick else 10_000_000)
    naive_total = args.naive_readings or (100_000 if args.quick else 1_000_000)
    per_poll = len(load_profiles()["generic"].registers)
    rounds = max(1, round(total / (meters * per_poll)))
    # The naive run reads the first rounds of the same fleet: the same batches, but less history
    # (no spike statistics yet), which if anything flatters the naive path.
    naive_rounds = max(1, round(naive_total / (meters * per_poll)))

    print(f"meters={meters} rounds={rounds} (15-min polls, {rounds / 96:.1f} days) batch={BATCH} polls; "
          f"load {open('/proc/loadavg').read().split()[0:3]}")
    full = vectorised(meters, rounds)
    crossed = vectorised(meters, rounds, cross=True)
    piped = pipeline(meters, rounds)
    first = vectorised(meters, naive_rounds)
    slow = naive(meters, naive_rounds)
    rows = [("vectorised: normalise + validate", rounds, full),
            ("... + checks across series**", rounds, crossed),
            ("Pipeline.process, spool stand-in*", rounds, piped),
            ("vectorised, naive's readings", naive_rounds, first), ("naive per reading", naive_rounds, slow)]
    def rate(t: Timing, i: int) -> float:
        return t[0] / t[i]

    print(f"{'path':34} {'rounds':>6} {'readings':>11} {'wall s':>7} {'readings/s':>11} {'CPU s':>7} "
          f"{'/s of CPU':>11}")
    for name, r, (count, wall, cpu) in rows:
        print(f"{name:34} {r:>6} {count:>11,} {wall:>7.2f} {count / wall:>11,.0f} {cpu:>7.2f} {count / cpu:>11,.0f}")
    print("* Pipeline.process end to end (normalise, validate, Reading objects, counters) with a spool STAND-IN "
          "that only counts: no encoding, no disk, no fsync; readings = those handed to it, estimates included")
    print("** TOU sum check and usage while disconnected after the validator (issue 24), 10 % of the meters "
          f"inactive; speed relative to the validator alone (wall / CPU): {rate(crossed, 1) / rate(full, 1):.2f} / "
          f"{rate(crossed, 2) / rate(full, 2):.2f}")

    print(f"speed-up (wall / CPU): {rate(full, 1) / rate(slow, 1):.1f}x / {rate(full, 2) / rate(slow, 2):.1f}x full run "
          f"vs naive; {rate(first, 1) / rate(slow, 1):.1f}x / {rate(first, 2) / rate(slow, 2):.1f}x on the naive's "
          f"own readings (these include the one-off setup of every series)")
    print(f"load after: {open('/proc/loadavg').read().split()[0:3]}")


if __name__ == "__main__":
    main()
