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


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A titled plain-text table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    print(speed())
