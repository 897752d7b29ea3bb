"""Backfill rate: intervals/s the DLMS driver reads from one meter's load profile after a gap.

One simulated meter (simulators/dlms, in this process's event loop, over real TCP with the wrapper),
the driver's backfill (drivers/dlms/backfill.py) over a day of 15-minute profile (96 intervals), in
its default chunks (6 h per association, bus lock released between chunks), ciphered (HLS-GMAC) or not:

    .venv/bin/python bench/dlms_backfill.py --days 1 --passes 5 [--cipher]

Prints the machine line and load average first: the figure depends on both (the simulator shares the
process and the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import speed, table
from drivers.dlms.backfill import BackfillPolicy
from drivers.dlms.poller import DlmsPoller, DlmsTarget
from drivers.dlms.reads import REGISTER
from drivers.dlms.session import Security
from drivers.dlms.settings import DlmsEndpoint
from gateway.model.samples import Sample
from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DlmsFleet, FleetOptions, Secrets
from simulators.dlms.fleet import with_cipher

METER = "D-0001"


async def run(days: int, passes: int, cipher: bool) -> list[tuple[str, ...]]:
    options = with_cipher(FleetOptions(meters=1, port=0, seed=7, speedup=0.0, secrets=Secrets()), cipher)
    rows: list[tuple[str, ...]] = []
    async with DlmsFleet(options) as fleet:
        port = fleet.meters[METER].port
        security = (Security("hls_gmac", authentication_key=DEFAULT_AK, encryption_key=DEFAULT_EK,
                             system_title=b"BENCH001") if cipher else Security())
        client = 1 if cipher else 16
        target = DlmsTarget(METER, client, 1, None, security, ((REGISTER, "1-0:1.8.0"),), interval=900.0,
                            frame_counter="0-0:43.1.0" if cipher else None)
        count = 0

        async def emit(_sample: Sample) -> None:
            nonlocal count
            count += 1

        poller = DlmsPoller(DlmsEndpoint(name="bench", host="127.0.0.1", port=port, timeout=10), [target], emit,
                            clock=fleet.now, backfill=BackfillPolicy())
        assert poller.backfill is not None
        for n in range(1, passes + 1):
            until = fleet.now()
            count = 0
            t0, c0 = time.perf_counter(), time.process_time()
            got = await poller.backfill.fill(poller, METER, until - timedelta(days=days), until)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append((str(n), str(got), f"{wall:.3f}", f"{got / wall:.0f}", f"{cpu:.3f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--cipher", action="store_true", help="HLS-GMAC with global ciphering")
    a = ap.parse_args()
    print(speed())
    rows = asyncio.run(run(a.days, a.passes, a.cipher))
    mode = "HLS-GMAC ciphered" if a.cipher else "lowest security"
    table(f"backfill of {a.days} day(s) of 15-minute profile, one meter, {mode} (simulator in this process)",
          ("pass", "intervals", "wall s", "intervals/s", "process CPU s"), rows)


if __name__ == "__main__":
    main()
