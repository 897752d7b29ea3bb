"""Benchmark: the DLMS driver against a ciphered simulated fleet over TCP (issue 17, item 11).

    .venv/bin/python bench/dlms_poll.py             # 500 meters: 60 s interval, saturated, a day of backfill
    .venv/bin/python bench/dlms_poll.py --quick     # 100 meters, shorter phases (about a minute)

The meters (`meter-gateway simulate dlms --cipher`, HLS-GMAC with global ciphering, one TCP port
each, IEC 62056-47 wrapper) run in their own process; the gateway side is this process: one
`DlmsPoller` per meter endpoint as the gateway builds them (drivers/dlms/spec.py), the generic map's
objects plus the clock read every poll. Three phases:

1. schedule: `meter-gateway run` in its own process (driver, pipeline, SQLite store; the way
   bench/gwproc.py runs it) polls every meter at its 60 s interval; its CPU over a window after a
   warm-up (every meter's first association and frame-counter read), as a share of one core
   (target < 25 %), and its meters' states at the end (all "ok" when every poll succeeds);
2. saturated (in this process): the driver's `DlmsPoller`s, built as the gateway builds them,
   poll every meter back to back, reads/s; then a bare loop of the same library on the
   same meters (dlms-cosem's sans-io DlmsConnection over plain asyncio sockets: associate, the same
   GETs, release; no gateway) and the ratio gateway / bare (target >= 0.5);
3. backfill: a day of 15-minute load profile (`1-0:99.1.0`) of every meter read by range through
   `DlmsPoller.read_profile`, intervals/s.

A read is one association (HLS-GMAC, globally ciphered), the clock and the objects of the generic
map, release: the gateway's poll. The bare loop asks the same GETs (an object the meter lacks
included) but never retries another class for it as the driver does, so the ratio is conservative.
Figures depend on the machine and its load (printed first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from dlms_cosem import cosem, enumerations, utils  # noqa: E402
from dlms_cosem import dlms_data as dd  # noqa: E402
from dlms_cosem import state as dlms_state  # noqa: E402
from dlms_cosem.connection import DlmsConnection  # noqa: E402
from dlms_cosem.protocol import xdlms  # noqa: E402

from bench.dlms_sim import cpu_seconds, start_fleet  # noqa: E402
from bench.gwproc import (  # noqa: E402
    CpuWatch,
    create_key,
    free_port,
    metric_sum,
    parse_metrics,
    start_gateway,
    stop,
)
from bench.machine import speed, table  # noqa: E402
from drivers.base import BuildContext  # noqa: E402
from drivers.dlms.poller import DlmsPoller, DlmsTarget  # noqa: E402
from drivers.dlms.spec import build  # noqa: E402
from gateway.config.sections import bindings  # noqa: E402
from gateway.model.samples import PollFailure, RawObjects, Sample  # noqa: E402
from gateway.runtime.config import GatewayConfig  # noqa: E402
from simulators.dlms import DEFAULT_AK, DEFAULT_EK  # noqa: E402
from tests.fixtures.gateway import gateway_config  # noqa: E402

PROFILE = "1-0:99.1.0"
CLOCK = "0-0:1.0.0.255"


class Counts:
    def __init__(self, meters: int = 0) -> None:
        self.reads = 0
        self.failures: dict[str, int] = {}
        self.meters = meters
        self.round_done = asyncio.Event()  # as many polls as meters: the first round (warm-up) is over

    async def emit(self, sample: Sample) -> None:
        if isinstance(sample, RawObjects):
            self.reads += 1
        elif isinstance(sample, PollFailure):
            self.failures[sample.error.kind] = self.failures.get(sample.error.kind, 0) + 1
        if self.reads + sum(self.failures.values()) >= self.meters:
            self.round_done.set()


def write_keys(work: Path, ports: dict[str, int]) -> Path:
    keys = work / "keys.toml"
    keys.write_text("".join(f'[meters."{m}"]\nauthentication_key = "{DEFAULT_AK.hex()}"\n'
                            f'encryption_key = "{DEFAULT_EK.hex()}"\n' for m in ports))
    os.chmod(keys, 0o600)
    return keys


def pollers(ports: dict[str, int], work: Path, interval: float, counts: Counts) -> list[DlmsPoller]:
    keys = work / "keys.toml"
    endpoints = [{"name": m, "host": "127.0.0.1", "port": p, "timeout": 10.0} for m, p in ports.items()]
    cfg = gateway_config(work / "gw", dlms={"key_file": str(keys), "state_dir": str(work / "dlms"),
                                            "endpoints": endpoints, "breaker_failures": 1000})
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    doc["meters"] = [{"meter_id": m, "protocol": "dlms", "endpoint": m, "client_sap": 1, "authentication": "hls_gmac",
                      "interval": interval, "align": False} for m in ports]
    cfg = GatewayConfig.model_validate(doc)
    return build(BuildContext(settings=cfg.section("dlms"), meters=bindings(cfg), profiles={}, emit=counts.emit,
                              gateway_id="bench"))


async def run_for(ps: list[DlmsPoller], counts: Counts, seconds: float) -> tuple[int, float, float]:
    """Run the pollers until every meter was read once (its frame counter, scalers and object
    classes learnt: a gateway does that once at start), then `seconds`: (reads, wall, CPU) of those."""
    tasks = [asyncio.create_task(p.run()) for p in ps]
    try:
        await counts.round_done.wait()
        reads0, cpu0, wall0 = counts.reads, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
    finally:
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        reads = counts.reads - reads0
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    return reads, wall, cpu


# -- the bare loop: the same library, no gateway -----------------------------------------------------
async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, apdu: bytes) -> bytes:
    writer.write(b"".join(v.to_bytes(2, "big") for v in (1, 1, 1, len(apdu))) + apdu)
    header = await reader.readexactly(8)
    return await reader.readexactly(int.from_bytes(header[6:8], "big"))


async def _request(conn: DlmsConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   apdu: Any) -> Any:
    conn.receive_data(await _exchange(reader, writer, conn.send(apdu)))
    return conn.next_event()


async def bare_cycle(port: int, counter: int, objects: list[tuple[int, str]]) -> int:
    """One association, the clock and the objects' values, release; returns the next invocation counter."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        conn = DlmsConnection(client_system_title=b"BAREBNCH",
                              authentication_method=enumerations.AuthenticationMechanism.HLS_GMAC,
                              global_encryption_key=DEFAULT_EK, global_authentication_key=DEFAULT_AK,
                              client_invocation_counter=counter)
        aare = await _request(conn, reader, writer, conn.get_aarq())
        if conn.state.current_state == dlms_state.NO_ASSOCIATION:
            raise ValueError(f"association refused: {aare}")
        if conn.state.current_state == dlms_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            method = cosem.CosemMethod(enumerations.CosemInterface.ASSOCIATION_LN, cosem.Obis(0, 0, 40, 0, 0), 1)
            await _request(conn, reader, writer, xdlms.ActionRequestNormal(
                cosem_method=method, data=dd.OctetStringData(conn.get_hls_reply()).to_bytes()))
        for interface, code in [(8, CLOCK), *objects]:
            attr = cosem.CosemAttribute(enumerations.CosemInterface(interface), cosem.Obis.from_string(code), 2)
            answer = await _request(conn, reader, writer, xdlms.GetRequestNormal(cosem_attribute=attr))
            if isinstance(answer, xdlms.GetResponseNormal):  # an object the meter lacks is asked, as the driver does
                utils.parse_as_dlms_data(answer.data)
        await _request(conn, reader, writer, conn.get_rlrq())
        return int(conn.client_invocation_counter)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def bare(ports: dict[str, int], counters: dict[str, int], objects: list[tuple[int, str]],
               seconds: float) -> tuple[int, float, float, int]:
    """Every meter read back to back for `seconds`: (reads, wall, CPU, failures)."""
    reads = failures = 0
    stop = time.monotonic() + seconds

    async def loop(meter: str) -> None:
        nonlocal reads, failures
        counter = counters[meter] + 10
        while time.monotonic() < stop:
            try:
                counter = await bare_cycle(ports[meter], counter, objects)
                reads += 1
            except (OSError, asyncio.IncompleteReadError, AttributeError, ValueError) as exc:
                if not failures:
                    print(f"bare loop, {meter}: {exc}")
                failures += 1
                counter += 10

    cpu0, wall0 = time.process_time(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for m in ports:
            tg.create_task(loop(m))
    return reads, time.monotonic() - wall0, time.process_time() - cpu0, failures


# -- the gateway as a process, on the 60 s schedule -------------------------------------------------------
def write_config(work: Path, ports: dict[str, int], api_port: int) -> Path:
    lines = ["[gateway]", 'id = "bench"', f'data_dir = "{work / "gwproc"}"', 'log_level = "warning"',
             "shutdown_deadline = 20.0", "", "[api]", 'host = "127.0.0.1"', f"port = {api_port}", "",
             "[storage]", 'backend = "sqlite"', "", "[dlms]", f'key_file = "{work / "keys.toml"}"',
             f'state_dir = "{work / "dlms"}"', "breaker_failures = 1000", ""]
    for m, port in ports.items():
        lines += ["[[dlms.endpoints]]", f'name = "{m}"', 'host = "127.0.0.1"', f"port = {port}", "timeout = 10.0", ""]
    for m in ports:
        lines += ["[[meters]]", f'meter_id = "{m}"', 'protocol = "dlms"', f'endpoint = "{m}"', "client_sap = 1",
                  'authentication = "hls_gmac"', "interval = 60", ""]  # aligned: minute boundaries, sends spread
    (work / "gwproc").mkdir(exist_ok=True)
    path = work / "gwproc" / "gateway.toml"
    path.write_text("\n".join(lines))
    return path


async def scheduled(args: argparse.Namespace, ports: dict[str, int], work: Path) -> tuple[str, ...]:
    """The gateway process's CPU over `args.window` s after `args.warmup` s, and its meters' states."""
    api_port = free_port()
    config = write_config(work, ports, api_port)
    key = create_key(config)
    url = f"http://127.0.0.1:{api_port}"
    proc = await start_gateway(config, work / "gwproc" / "gateway.log", url)
    readings = "meter_gateway_readings_total"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as api:
            await asyncio.sleep(args.warmup)
            before = metric_sum(parse_metrics((await api.get("/metrics")).text), readings)
            watch = CpuWatch(proc.pid)
            watch.start()
            await asyncio.sleep(args.window)
            watch.stop()
            stored = metric_sum(parse_metrics((await api.get("/metrics")).text), readings) - before
            counts = (await api.get("/v1/diag/meters")).json()["counts"]
    finally:
        await stop(proc)
    cpu = sum(v for k, v in watch.result.items() if not k.startswith("  "))
    states = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return (f"{len(ports)} meters at 60 s: gateway process, {args.window:.0f} s after {args.warmup:.0f} s",
            f"meters {states}; {stored:.0f} readings in the window", f"gateway CPU {cpu:.1f} % of one core "
            "(target < 25 %)", f"machine busy {watch.machine_pct:.0f} % of one core")


# -- the run -------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, ports: dict[str, int], work: Path) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    n = len(ports)
    write_keys(work, ports)
    # 1. the schedule: `meter-gateway run` in its own process (driver, pipeline, SQLite store)
    rows.append(await scheduled(args, ports, work))
    # 2. saturated: the gateway, then the bare loop on the same meters
    counts = Counts(n)
    ps = pollers(ports, work, 0.001, counts)
    gw_reads, wall, cpu = await run_for(ps, counts, args.saturate)
    gw_rate = gw_reads / wall
    rows.append(("saturated, gateway driver (DlmsPoller)", f"{gw_reads} reads, {gw_rate:.1f}/s",
                 f"CPU {cpu / wall:.1%}, {1000 * cpu / max(gw_reads, 1):.2f} ms/read",
                 f"failures {counts.failures or 0}"))
    objects = [(i, c if c.count(".") == 2 else f"{c}.255") for i, c in _objects(ps[0])]
    counters = {m: int((work / "dlms" / f"{m}.invocation").read_text()) for m in ports}
    reads, bwall, bcpu, bfail = await bare(ports, counters, objects, args.saturate)
    bare_rate = reads / bwall
    rows.append(("saturated, bare dlms-cosem loop", f"{reads} reads, {bare_rate:.1f}/s",
                 f"CPU {bcpu / bwall:.1%}, {1000 * bcpu / max(reads, 1):.2f} ms/read", f"failures {bfail}"))
    rows.append(("gateway / bare", f"{gw_rate / max(bare_rate, 1e-9):.2f} (target >= 0.5)",
                 f"{1 + len(objects)} GETs a read (clock + {len(objects)} objects)", ""))
    # 3. backfill: a day of the 15-minute profile of every meter (fresh pollers: they read the
    # meter's frame counter, which the bare loop moved on, as a gateway does at start)
    ps = pollers(ports, work, 60.0, Counts())
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=1)
    intervals = failed = 0
    sem = asyncio.Semaphore(args.backfill_parallel)

    async def one(p: DlmsPoller, meter: str) -> None:
        nonlocal intervals, failed
        async with sem:
            try:
                got = await p.read_profile(meter, PROFILE, start, end)
            except Exception as exc:
                if not failed:
                    print(f"backfill, {meter}: {type(exc).__name__}: {exc}")
                failed += 1
                return
            intervals += len(got.rows)

    cpu0, wall0 = time.process_time(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for p in ps:
            for m in p.meter_ids():
                tg.create_task(one(p, m))
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    rows.append((f"backfill, a day of 15 min profile x {n}", f"{intervals} intervals in {wall:.1f} s",
                 f"{intervals / wall:.0f} intervals/s, CPU {cpu / wall:.1%}",
                 f"failures {failed}, {args.backfill_parallel} at once"))
    return rows


def _objects(p: DlmsPoller) -> list[tuple[int, str]]:
    target: DlmsTarget = next(iter(p._targets.values()))
    return list(target.objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 meters, one 60 s round, 5 s saturated runs: "
                        "about a minute and a half")
    parser.add_argument("--meters", type=int, default=None)
    parser.add_argument("--window", type=float, default=None, help="seconds of the 60 s schedule measured "
                        "(default 120; --quick 60: one round)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the window (default 70: "
                        "every meter's first association and frame counter read done; --quick 5)")
    parser.add_argument("--saturate", type=float, default=None, help="seconds of each saturated run (default 30)")
    parser.add_argument("--backfill-parallel", type=int, default=50)
    args = parser.parse_args()
    args.meters = args.meters or (100 if args.quick else 500)
    args.window = args.window or (60.0 if args.quick else 120.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 70.0)
    args.saturate = args.saturate or (5.0 if args.quick else 30.0)
    logging.getLogger("dlms_cosem").setLevel(logging.ERROR)  # it logs every deciphered APDU as a warning
    logging.getLogger("drivers").setLevel(logging.ERROR)
    print(speed())
    proc, ports = start_fleet(args.meters, True)
    try:
        with tempfile.TemporaryDirectory(prefix="dlms-bench-") as tmp:
            sim0 = cpu_seconds(proc.pid)
            rows = asyncio.run(run(args, ports, Path(tmp)))
            sim = cpu_seconds(proc.pid) - sim0
    finally:
        proc.terminate()
        proc.wait(10)
    table(f"DLMS driver, {len(ports)} simulated meters over TCP, HLS-GMAC + global ciphering "
          f"(simulator in its own process, {sim:.0f} s of its CPU over the run)",
          ("phase", "result", "CPU", "notes"), rows)


if __name__ == "__main__":
    main()
