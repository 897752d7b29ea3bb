"""How fast this machine runs Python, printed at the top of every benchmark.

Figures taken on different machines of "the same kind" differed by 3x for the same code
(2 cores each; one session's Reading() cost 0.65 µs, another's 1.9 µs). A fixed pure-Python
loop, timed the same way each run, lets a reader compare figures across runs and machines.
"""

from __future__ import annotations

import os
import platform
import timeit


def speed() -> str:
    """One line: the CPU, and the best of 5 timings of sum(range(1000)) in µs (lower is faster)."""
    best = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    return (f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; "
            f"sum(range(1000)) {best:.1f} µs (lower is faster); load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError:
        return []


if __name__ == "__main__":
    print(speed())
