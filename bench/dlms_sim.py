"""What the DLMS simulator costs: CPU of `meter-gateway simulate dlms` (its own process) per meter read cycle.

A read cycle is what the gateway's 60 s poll will do to each meter: an HLS-GMAC ciphered association
(or LLS with --no-cipher), 8 register reads, the last hour of load profile by range, release. The client
is dlms-cosem's blocking client in threads (its CPU is this process's, not the simulator's).

    .venv/bin/python bench/dlms_sim.py --meters 500 --passes 2

Prints the simulator's CPU seconds per pass and the share of one core a 500-meter fleet polled every 60 s
would take. Figures depend on the machine and its load (printed first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dlms_cosem import cosem, utils
from dlms_cosem import enumerations as E
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.cosem import Obis
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor

from bench.machine import speed, table
from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DEFAULT_PASSWORD

REGISTERS = ("1-0:1.8.0.255", "1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.0.255", "1-0:32.7.0.255",
             "1-0:31.7.0.255", "1-0:1.7.0.255", "1-0:14.7.0.255")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_fleet(meters: int, cipher: bool) -> tuple[subprocess.Popen[str], dict[str, int]]:
    cmd = [sys.executable, "-m", "gateway", "simulate", "dlms", "--meters", str(meters), "--port", "0",
           "--cipher" if cipher else "--no-cipher"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    ports: dict[str, int] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.match(r"\s+(D-\d+) [\d.]+:(\d+) ", line)
        if found:
            ports[found[1]] = int(found[2])
        if line.startswith("ready"):
            return proc, ports
    raise RuntimeError(f"the simulator exited: {proc.wait()}")


def cycle(port: int, cipher: bool, counters: dict[int, int]) -> int:
    """One meter read cycle; returns the number of GETs."""
    if cipher:
        if port not in counters:
            public = DlmsClient.with_tcp_transport("127.0.0.1", port, 16, 1)
            with public.session():
                counters[port] = utils.parse_as_dlms_data(public.get(
                    cosem.CosemAttribute(E.CosemInterface.DATA, Obis.from_string("0-0:43.1.0.255"), 2)))
        client = DlmsClient.with_tcp_transport(
            "127.0.0.1", port, 1, 1, authentication_method=E.AuthenticationMechanism.HLS_GMAC,
            encryption_key=DEFAULT_EK, authentication_key=DEFAULT_AK, client_system_title=b"BENCHCLI",
            client_initial_invocation_counter=counters[port])
    else:
        client = DlmsClient.with_tcp_transport("127.0.0.1", port, 1, 1, authentication_method=E.AuthenticationMechanism.LLS,
                                               password=DEFAULT_PASSWORD)
    now = dt.datetime.now(dt.UTC)
    clock = CaptureObject(cosem.CosemAttribute(E.CosemInterface.CLOCK, Obis.from_string("0-0:1.0.0.255"), 2), 0)
    with client.session():
        for ln in REGISTERS:
            client.get(cosem.CosemAttribute(E.CosemInterface.REGISTER, Obis.from_string(ln), 2))
        client.get(cosem.CosemAttribute(E.CosemInterface.PROFILE_GENERIC, Obis.from_string("1-0:99.1.0.255"), 2),
                   access_descriptor=RangeDescriptor(clock, now - dt.timedelta(hours=1), now))
    if cipher:
        counters[port] = client.client_invocation_counter
    return len(REGISTERS) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=500)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cipher", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    logging.getLogger("dlms_cosem").setLevel(logging.ERROR)  # it logs every deciphered APDU as a warning
    print(speed())
    t0 = time.perf_counter()
    proc, ports = start_fleet(args.meters, args.cipher)
    started = time.perf_counter() - t0
    rows = []
    counters: dict[int, int] = {}
    try:
        for n in range(1, args.passes + 1):
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                gets = sum(pool.map(lambda p: cycle(p, args.cipher, counters), ports.values()))
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
            share = cpu / len(ports) * args.meters / 60
            rows.append((str(n), f"{len(ports)}", f"{gets}", f"{wall:.1f}", f"{cpu:.2f}",
                         f"{cpu / len(ports) * 1000:.1f}", f"{share:.1%}"))
    finally:
        proc.terminate()
        proc.wait(10)
    mode = "HLS-GMAC ciphered" if args.cipher else "LLS plain"
    print(f"fleet of {args.meters} started in {started:.1f} s (process start, history built lazily)")
    table(f"simulator CPU per read cycle ({mode}; pass 1 includes the frame counter reads and the history build)",
          ("pass", "meters", "GETs", "wall s", "sim CPU s", "sim CPU ms/meter", f"share of a core, {args.meters} meters/60 s"),
          rows)


if __name__ == "__main__":
    main()
