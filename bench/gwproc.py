"""A gateway as a black box, for the benchmarks that measure it from outside (capacity, api_under_poll).

The gateway runs as `meter-gateway run --config FILE` (whatever processes that command starts, they are
found as its descendants), the Modbus simulator in its own process, and everything measured comes from
where a user would look: /metrics, the store's own tables (read from this process: SQLite in WAL mode
allows a reader elsewhere, TimescaleDB through a connection), and /proc for CPU. Nothing here imports the
gateway's runtime, so the benchmarks measure any layout of its processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
#: Where the gateway and simulator processes start (`python -m gateway` runs the code found there):
#: another checkout measures that version with these benchmarks.
GATEWAY_ROOT = Path(os.environ.get("BENCH_GATEWAY_ROOT", ROOT))
TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; nan if there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def weighted_pct(counts: dict[float, int], q: float) -> float:
    """The q-th percentile of values given as {value: how many}."""
    total = sum(counts.values())
    if not total:
        return float("nan")
    rank, seen = q / 100 * total, 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


# -- processes -------------------------------------------------------------------------------------
async def start_simulator(meters: int, endpoints: int, profile: str) -> tuple[asyncio.subprocess.Process, list[int]]:
    """`meter-gateway simulate modbus` in its own process; its endpoints' ports once it is ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "modbus", "--meters", str(meters), "--endpoints", str(endpoints),
        "--profile", profile, "--port", "0", "--seed", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=GATEWAY_ROOT, env={**os.environ, "COLUMNS": "200"})
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(120):
        while not lines or lines[-1] != "ready; Ctrl-C stops":
            line = (await proc.stdout.readline()).decode()
            if not line:
                msg = f"simulator ended early: {lines}"
                raise RuntimeError(msg)
            lines.append(line.strip())
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+) units", "\n".join(lines))]
    assert len(ports) == endpoints, lines
    return proc, ports


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(data_dir: Path, ports: list[int], meters: int, *, profile: str, interval: float, store: str,
                 dsn: str | None, api_port: int) -> Path:
    """A gateway configuration (TOML) polling `meters` meters dealt in blocks over the endpoints, as the
    simulator deals them (unit ids 1.. on each)."""
    per = -(-meters // len(ports))
    lines = ["[gateway]", 'id = "bench"', f'data_dir = "{data_dir}"', 'log_level = "warning"', "shutdown_deadline = 20.0",
             "", "[api]", 'host = "127.0.0.1"', f"port = {api_port}", "", "[storage]", f'backend = "{store}"']
    if dsn is not None:
        lines.append(f'dsn = "{dsn}"')
    lines += ["", "[modbus]", f"default_interval = {interval}", ""]
    for k, port in enumerate(ports):
        lines += ["[[modbus.endpoints]]", f'name = "sim{k:02d}"', 'host = "127.0.0.1"', f"port = {port}", ""]
    for i in range(meters):
        lines += ["[[meters]]", f'meter_id = "M-{i + 1:04d}"', f'endpoint = "sim{i // per:02d}"', f"unit = {i % per + 1}",
                  f'profile = "{profile}"', ""]
    path = data_dir / "gateway.toml"
    path.write_text("\n".join(lines))
    return path


def create_key(config: Path) -> str:
    """An admin API key made with `meter-gateway keys create` (the store is created and migrated if needed)."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--config", str(config), "--name", "bench",
                          "--scope", "admin"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "200"}, cwd=GATEWAY_ROOT)
    return out.stdout.strip().splitlines()[-1]


async def start_gateway(config: Path, log: Path, url: str) -> asyncio.subprocess.Process:
    """`meter-gateway run --config CONFIG`, once /healthz answers."""
    with log.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=f,
                                                    cwd=GATEWAY_ROOT)
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                msg = f"gateway ended with {proc.returncode}: {log.read_text()[-2000:]}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return proc
            await asyncio.sleep(0.2)
    msg = f"gateway did not answer /healthz within 120 s: {log.read_text()[-2000:]}"
    raise RuntimeError(msg)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(sig)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def timescale(keep_dir: bool = False) -> AsyncIterator[tuple[str, int]]:
    """A private PostgreSQL + TimescaleDB cluster (durable settings), as the tests start one; yields a DSN
    and the server's process id (its backends are processes under it)."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.timescale import PgCluster, _make_root

    root = _make_root()
    cluster = PgCluster(root, free_port())
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start, durable=True)
        dsn = cluster.dsn(await asyncio.to_thread(cluster.create_database))
        yield dsn, int((cluster.data / "postmaster.pid").read_text().split()[0])
    finally:
        if cluster.running:
            await asyncio.to_thread(cluster.stop, "fast")
        if not keep_dir:
            shutil.rmtree(root, ignore_errors=True)


# -- what the gateway says -------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{label="v",...}': value} (samples, counters with their _total name)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def metric_sum(metrics: dict[str, float], name: str, **match: str) -> float:
    """Sum of the samples of `name` whose labels include `match`; a label value starting with '!' excludes it."""
    total = 0.0
    for key, value in metrics.items():
        base, _, labels = key.partition("{")
        if base != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if all((found.get(k) != v[1:]) if v.startswith("!") else found.get(k) == v for k, v in match.items()):
            total += value
    return total


# -- CPU -------------------------------------------------------------------------------------------
def _stat(path: str) -> tuple[str, int, float] | None:
    """(comm, ppid, user+system CPU seconds) from a /proc stat file."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid: int) -> list[int]:
    """`pid` and every process under it."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(f"/proc/{entry}/stat")
            if st is not None:
                parents[st[1]].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a]
    # "python -m gateway run --config x" -> "gateway run"; keep it short
    if "-m" in words:
        words = words[words.index("-m") + 1 :]
    return f"{' '.join(w for w in words[:3] if not w.startswith('/'))} [{pid}]"


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class CpuWatch:
    """CPU seconds of a process tree (per process, and per thread of each) between `start` and `stop`."""

    root: int
    threads: bool = False
    #: Also the processes under `root`.
    tree: bool = True
    _t0: float = 0.0
    _before: dict[str, float] = field(default_factory=dict)
    _machine0: tuple[float, float] = (0.0, 0.0)
    result: dict[str, float] = field(default_factory=dict)
    machine_pct: float = 0.0

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid in descendants(self.root) if self.tree else [self.root]:
            st = _stat(f"/proc/{pid}/stat")
            if st is None:
                continue
            label = _label(pid)
            out[label] = st[2]
            if self.threads:
                with contextlib.suppress(OSError):
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        ts = _stat(f"/proc/{pid}/task/{tid}/stat")
                        if ts is not None:
                            out[f"  {label} thread {tid}{' (main)' if int(tid) == pid else ''}"] = ts[2]
        return out

    def start(self) -> None:
        self._t0, self._before, self._machine0 = time.monotonic(), self._sample(), machine_busy()

    def stop(self) -> None:
        wall = time.monotonic() - self._t0
        after = self._sample()
        self.result = {k: 100 * (v - self._before.get(k, 0.0)) / wall for k, v in after.items()}
        busy, total = machine_busy()
        self.machine_pct = 100 * (os.cpu_count() or 1) * (busy - self._machine0[0]) / max(1, total - self._machine0[1])

    def rows(self) -> Iterator[tuple[str, str]]:
        for k, v in self.result.items():
            if not k.startswith("  ") or v >= 1.0:
                yield (f"CPU % of one core: {k.strip()}", f"{v:.0f}")


# -- what the store holds ----------------------------------------------------------------------------
class StoreWatch:
    """New committed readings, read straight from the store: per second of their timestamp, and each
    meter's newest timestamp. Incremental (by seq), so each look costs what arrived since the last."""

    def __init__(self, store: str, *, sqlite_path: Path | None = None, dsn: str | None = None) -> None:
        self.store = store
        self.sqlite_path, self.dsn = sqlite_path, dsn
        self._db: Any = None
        self.last_seq = 0
        self.newest: dict[str, float] = {}
        self.received: dict[float, int] = {}

    def open(self) -> None:
        if self.store == "sqlite":
            assert self.sqlite_path is not None
            self._db = sqlite3.connect(self.sqlite_path, timeout=10, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA query_only=ON")
        else:
            import psycopg

            self._db = psycopg.connect(self.dsn or "", autocommit=True)
        self.last_seq = self._max_seq()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _max_seq(self) -> int:
        row = self._db.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()
        return int(row[0])

    def look(self) -> tuple[float, dict[float, int]]:
        """(when, {ts second: readings}) of the readings committed since the last look; `received` gets
        {received_at tenth of a second: readings} of the same rows (when the poll's answer came in)."""
        top = self._max_seq()
        when = time.time()
        self.received: dict[float, int] = {}
        if top <= self.last_seq:
            return when, {}
        if self.store == "sqlite":
            groups = self._db.execute("SELECT ts / 1000000, count(*) FROM readings WHERE seq > ? AND seq <= ? GROUP BY 1",
                                      (self.last_seq, top)).fetchall()
            newest = self._db.execute("SELECT meter_id, max(ts) / 1e6 FROM readings WHERE seq > ? AND seq <= ?"
                                      " GROUP BY meter_id", (self.last_seq, top)).fetchall()
            received = self._db.execute("SELECT received_at / 100000, count(*) FROM readings WHERE seq > ? AND"
                                        " seq <= ? AND received_at IS NOT NULL GROUP BY 1", (self.last_seq, top)).fetchall()
        else:
            groups = self._db.execute("SELECT floor(extract(epoch FROM ts))::bigint, count(*) FROM readings"
                                      " WHERE seq > %s AND seq <= %s GROUP BY 1", (self.last_seq, top)).fetchall()
            newest = self._db.execute("SELECT meter_id, extract(epoch FROM max(ts))::float8 FROM readings"
                                      " WHERE seq > %s AND seq <= %s GROUP BY meter_id", (self.last_seq, top)).fetchall()
            received = self._db.execute("SELECT floor(extract(epoch FROM received_at) * 10)::bigint, count(*)"
                                        " FROM readings WHERE seq > %s AND seq <= %s AND received_at IS NOT NULL"
                                        " GROUP BY 1", (self.last_seq, top)).fetchall()
        self.last_seq = top
        for meter, ts in newest:
            if ts > self.newest.get(meter, 0.0):
                self.newest[meter] = float(ts)
        self.received = {int(t) / 10: int(n) for t, n in received}
        return when, {float(s): int(n) for s, n in groups}
