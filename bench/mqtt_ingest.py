"""End-to-end MQTT ingest benchmark (issue 4). Not a test: prints a table.

    .venv/bin/python bench/mqtt_ingest.py            # full: 200,000 updates of 2,000 meters, 4 publishers
    .venv/bin/python bench/mqtt_ingest.py --quick    # about a minute: 30,000 updates, 300 meters, 2 publishers

Each consumer gets a fresh Mosquitto (persistence on, unlimited queue, as the gateway needs in
production), connects and subscribes first; then P publisher *processes* (paho, MQTT 5, QoS 1,
100 in flight each, payloads built beforehand) send N balance updates of distinct
meters and times as fast as the broker takes them:

  bare paho          one paho client in its own process: QoS 1, manual ack, acks each message in
                     on_message, nothing else. The limit (100 %).
  gateway / sqlite   `meter-gateway run` in its own process: MQTT -> normalise -> PAYG events ->
                     spool (SQLite, synchronous=FULL) -> PUBACK -> forwarder -> embedded SQLite store.
  gateway / timescale  the same into TimescaleDB (a private PostgreSQL 15 cluster, fsync on).

Rate = N / (time the last update is stored (or received, for bare paho) - time the publishers
started). Zero loss is checked: the store holds exactly N distinct (meter_id, ts) keys, each once,
and no dead letters. The publishers' own rate is printed too: a consumer that keeps up with them
(rate ~ publisher rate) is limited by the publishers, not measured at its own limit. "CPU us/msg"
is the consumer process's CPU time (all threads; for the gateway that includes the forwarder and
the embedded store, not PostgreSQL) per message: unlike msg/s it hardly depends on what else the
machine is doing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.machine import speed
from simulators.broker import Broker

SCRIPT = Path(__file__).resolve()
TOPIC = "payg/{meter_id}/balance"
#: Messages in flight per publisher. Small on purpose: paho 2.2 walks its whole outgoing-message
#: table on every PUBACK, so a window of 10,000 publishes ~5x slower than one of 100 (measured).
WINDOW = 100


def meter_ids(first: int, count: int) -> list[str]:
    return [f"B-{i:06d}" for i in range(first, first + count)]


# -- roles run as their own processes ---------------------------------------------------------------


def run_publisher(port: int, first: int, meters: int, count: int, t0: float, out: Path) -> None:
    """Publish `count` updates round-robin over `meters` meters; wait for 'go' on stdin."""
    ids = meter_ids(first, meters)
    base = datetime.fromtimestamp(t0, UTC)
    payloads = []
    for k in range(count):
        meter = ids[k % meters]
        step = k // meters
        ts = (base + timedelta(milliseconds=k)).isoformat(timespec="microseconds").replace("+00:00", "Z")
        balance = f"{2000 - step * 0.01:.2f}"
        payloads.append((TOPIC.format(meter_id=meter), (
            f'{{"ts": "{ts}", "balance": {balance}, "currency": "KES", "emergency_credit": 50.00, '
            f'"emergency_credit_in_use": false, "debt": 0.00, "relay": "connected"}}').encode()))
    window = threading.Semaphore(WINDOW)
    done = threading.Event()
    acked = [0]
    connected = threading.Event()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        window.release()
        acked[0] += 1
        if acked[0] == count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{first}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(30)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for topic, payload in payloads:
        window.acquire()
        info = client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish refused: {mqtt.error_string(info.rc)}")
    done.wait()
    end = time.time()
    client.disconnect()
    client.loop_stop()
    out.write_text(json.dumps({"start": start, "end": end, "count": count}))


def run_bare(port: int, expect: int, inflight: int, out: Path) -> None:
    """A bare paho subscriber with the gateway's session settings: QoS 1, manual ack, ack at once."""
    state = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    ready = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if not state["n"]:
            state["first"] = now
        state["n"] += 1
        state["last"] = now
        client.ack(msg.mid, msg.qos)
        if state["n"] >= expect:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC.format(meter_id="+"), qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 86400
    props.ReceiveMaximum = inflight  # what the gateway asks for (mqtt.max_inflight)
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    ready.wait(30)
    cpu0 = _cpu_seconds(os.getpid())
    print("ready", flush=True)
    done.wait(600)
    state["cpu"] = _cpu_seconds(os.getpid()) - cpu0
    client.disconnect()
    client.loop_stop()
    out.write_text(json.dumps(state))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the conductor ------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    count: int
    stored: int
    distinct: int
    seconds: float
    publisher_rate: float
    deadletters: int = 0
    cpu: float = 0.0  #: CPU seconds the consumer process used meanwhile (all threads)

    @property
    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"{what} did not start: {line!r}")


class Publishers:
    """P publisher processes, connected and waiting; `go()` starts them together."""

    def __init__(self, port: int, work: Path, publishers: int, meters: int, total: int) -> None:
        self.work = work
        per_meters, per_count = meters // publishers, total // publishers
        t0 = time.time() - 3600  # an hour ago: never "in the future" for the gateway
        self.procs = []
        self.outs = []
        for p in range(publishers):
            out = work / f"pub-{p}.json"
            self.outs.append(out)
            self.procs.append(_spawn("--role", "publisher", "--port", str(port), "--first", str(1 + p * per_meters),
                                     "--meters", str(per_meters), "--count", str(per_count), "--t0",
                                     str(t0 + p * 1000), "--out", str(out)))
        for proc in self.procs:
            _wait_ready(proc, "publisher")
        self.total = per_count * publishers

    def go(self) -> float:
        started = time.time()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return started

    def finish(self) -> float:
        """Wait for every publisher; their combined rate (messages per second of their span)."""
        for proc in self.procs:
            proc.wait(timeout=900)
            if proc.returncode:
                raise RuntimeError(f"a publisher failed with {proc.returncode}")
        stats = [json.loads(out.read_text()) for out in self.outs]
        span = max(s["end"] for s in stats) - min(s["start"] for s in stats)
        return float(sum(s["count"] for s in stats) / span)


def bench_bare(work: Path, args: argparse.Namespace) -> Result:
    with Broker(work / "broker-bare", max_inflight_messages=args.inflight) as broker:
        out = work / "bare.json"
        sub = _spawn("--role", "bare", "--port", str(broker.port), "--expect", str(args.messages),
                     "--inflight", str(args.inflight), "--out", str(out))
        _wait_ready(sub, "bare subscriber")
        pubs = Publishers(broker.port, work, args.publishers, args.meters, args.messages)
        started = pubs.go()
        publisher_rate = pubs.finish()
        sub.wait(timeout=900)
        state = json.loads(out.read_text())
    return Result("bare paho (QoS 1, manual ack)", pubs.total, int(state["n"]), int(state["n"]),
                  state["last"] - started, publisher_rate, cpu=state["cpu"])


def _gateway_config(work: Path, port: int, api_port: int, meters: int, backend: str, dsn: str | None,
                    inflight: int = 1000) -> Path:
    storage = f'backend = "timescale"\ndsn = "{dsn}"' if backend == "timescale" else 'backend = "sqlite"'
    text = f"""
[gateway]
id = "bench"
data_dir = "{work}"
log_level = "warning"
[api]
port = {api_port}
[storage]
{storage}
[mqtt]
enabled = true
port = {port}
client_id = "bench-gateway"
currency = "KES"
max_inflight = {inflight}
""" + "".join(f'[[meters]]\nmeter_id = "{m}"\nprotocol = "mqtt"\npayg = true\n' for m in meter_ids(1, meters))
    path = work / "gateway.toml"
    path.write_text(text)
    return path


def _ready(api_port: int) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2)
        checks = r.json()["checks"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return bool(checks.get("broker", {}).get("ok") and checks.get("sink", {}).get("ok"))


def _count_sqlite(db: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT meter_id || ts) FROM balances").fetchone()
        dead = con.execute("SELECT count(*) FROM deadletters").fetchone()[0]
    except sqlite3.OperationalError:
        return 0, 0, 0
    finally:
        con.close()
    return int(rows), int(distinct), int(dead)


def _count_timescale(dsn: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT (meter_id, ts)) FROM balances").fetchone() or (0, 0)
        dead = (conn.execute("SELECT count(*) FROM deadletters").fetchone() or (0,))[0]
    return int(rows), int(distinct), int(dead)


def _fast_count(backend: str, work: Path, dsn: str | None) -> int:
    if backend == "sqlite":
        con = sqlite3.connect(f"file:{work / 'store.db'}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute("SELECT max(seq) FROM balances").fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()
    import psycopg

    assert dsn is not None
    with psycopg.connect(dsn) as conn:
        return int((conn.execute("SELECT count(*) FROM balances").fetchone() or (0,))[0])


def bench_gateway(work: Path, args: argparse.Namespace, backend: str, dsn: str | None) -> Result:
    from tests.fixtures.ports import free_port

    gw_dir = work / f"gw-{backend}"
    gw_dir.mkdir()
    with Broker(work / f"broker-{backend}", max_inflight_messages=args.inflight) as broker:
        api_port = free_port()
        config = _gateway_config(gw_dir, broker.port, api_port, args.meters, backend, dsn, args.inflight)
        log = (gw_dir / "gateway.log").open("w")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=log, cwd=SCRIPT.parent.parent)
        try:
            deadline = time.monotonic() + 120
            while not _ready(api_port):
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway did not become ready; see {gw_dir / 'gateway.log'}")
                time.sleep(0.2)
            pubs = Publishers(broker.port, work, args.publishers, args.meters, args.messages)
            cpu0 = _cpu_seconds(gateway.pid)
            started = pubs.go()
            publisher_rate = pubs.finish()
            deadline = time.monotonic() + 900
            while (n := _fast_count(backend, gw_dir, dsn)) < pubs.total:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {n} of {pubs.total} updates stored after 15 min")
                time.sleep(0.1)
            seconds = time.time() - started
            cpu = _cpu_seconds(gateway.pid) - cpu0
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.kill()
            log.close()
    rows, distinct, dead = _count_sqlite(gw_dir / "store.db") if backend == "sqlite" else _count_timescale(dsn or "")
    return Result(f"gateway -> {backend}", pubs.total, rows, distinct, seconds, publisher_rate, dead, cpu)


@contextlib.contextmanager
def timescale_cluster(dsn: str | None):  # type: ignore[no-untyped-def]
    if dsn:
        yield dsn
        return
    from tests.fixtures.ports import free_port
    from tests.fixtures.timescale import PgCluster, _make_root

    root = _make_root()
    cluster = PgCluster(root, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster.dsn(cluster.create_database())
    finally:
        if cluster.running:
            cluster.stop("fast")
        shutil.rmtree(root, ignore_errors=True)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    bare = next((r for r in results if r.name.startswith("bare")), None)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print()
    print(f"MQTT ingest: {args.messages:,} balance updates of {args.meters:,} meters, QoS 1, "
          f"{args.publishers} publisher processes, {args.inflight} in flight per subscriber, {os.cpu_count()} CPUs, "
          f"load average {' '.join(load)}")
    header = f"{'consumer':34} {'stored':>9} {'lost':>6} {'dup':>5} {'dead':>5} {'seconds':>8} {'msg/s':>9} " \
             f"{'% bare':>7} {'pub msg/s':>10} {'CPU us/msg':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        share = f"{100 * r.rate / bare.rate:.0f} %" if bare is not None and bare.rate else "-"
        print(f"{r.name:34} {r.stored:>9,} {r.count - r.distinct:>6,} {r.stored - r.distinct:>5,} {r.deadletters:>5,} "
              f"{r.seconds:>8.2f} {r.rate:>9,.0f} {share:>7} {r.publisher_rate:>10,.0f} "
              f"{1e6 * r.cpu / max(1, r.stored):>11,.0f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about a minute: 30,000 updates, 2 publishers")
    parser.add_argument("--messages", type=int, help="balance updates in total (default 200,000; quick 30,000)")
    parser.add_argument("--meters", type=int, help="PAYG meters (default 2,000; quick 300)")
    parser.add_argument("--publishers", type=int, help="publisher processes (default 4; quick 2)")
    parser.add_argument("--only", choices=["bare", "sqlite", "timescale"], action="append",
                        help="run only these consumers (repeatable)")
    parser.add_argument("--dsn", help="an existing TimescaleDB database instead of a private cluster")
    parser.add_argument("--inflight", type=int, default=1000,
                        help="un-acked messages per subscriber: broker max_inflight_messages and the gateway's "
                             "mqtt.max_inflight (default 1000)")
    # Internal: the roles this script runs as its own subprocesses.
    parser.add_argument("--role", choices=["publisher", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publisher":
        run_publisher(args.port, args.first, args.meters, args.count, args.t0, args.out)
        return
    if args.role == "bare":
        run_bare(args.port, args.expect, args.inflight, args.out)
        return
    print(speed())
    args.messages = args.messages or (30_000 if args.quick else 200_000)
    args.meters = args.meters or (300 if args.quick else 2_000)
    args.publishers = args.publishers or (2 if args.quick else 4)
    args.messages -= args.messages % args.publishers
    only = set(args.only or ["bare", "sqlite", "timescale"])
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        work = Path(tmp)
        if "bare" in only:
            results.append(bench_bare(work, args))
            print_table(results, args)
        if "sqlite" in only:
            results.append(bench_gateway(work, args, "sqlite", None))
            print_table(results, args)
        if "timescale" in only:
            with timescale_cluster(args.dsn) as dsn:
                results.append(bench_gateway(work, args, "timescale", dsn))
    print_table(results, args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
