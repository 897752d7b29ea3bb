"""`meter-gateway spool check|salvage`, run as a user runs them (a real process, a real spool file)."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.model import Batch, Channel, Kind, Reading
from storage.spool import Spool
from storage.spool.codec import encode
from storage.spool.sqlitefile import SpoolLock

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "240"}  # one table row per line
    return subprocess.run([sys.executable, "-m", "gateway", "spool", *args], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


async def make_spool(path: Path, n: int) -> None:
    async with Spool(path):
        pass
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.executemany("INSERT INTO spool (body, items, size, created) VALUES (?, 1, ?, ?)", [
            (body, len(body), T0.timestamp() + i) for i in range(n) for body in [encode(Batch(readings=[
                Reading("M-1", Channel.ENERGY_IMPORT, T0 + timedelta(minutes=i), float(i), Kind.CUMULATIVE)]))]])


def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nid = "edge-1"\ndata_dir = "{tmp_path / "data"}"\n[api]\nenabled = false\n')
    return path


def row(output: str, label: str) -> str:
    """The value column of the table row `label`."""
    line = next(ln for ln in output.splitlines() if f" {label} " in ln)
    return line.split("│")[2].strip()


async def test_check_reports_a_healthy_spool(tmp_path: Path) -> None:
    await make_spool(tmp_path / "data" / "spool.db", 5)
    done = cli("check", "--config", str(config(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout
    assert row(done.stdout, "batches readable") == "5" and row(done.stdout, "items in them") == "5"
    assert row(done.stdout, "batches lost (unreadable)") == "0 batches"
    assert row(done.stdout, "in use by a gateway") == "no"


async def test_check_then_salvage_a_damaged_spool_and_salvage_refuses_while_a_gateway_holds_it(
        tmp_path: Path) -> None:
    path = tmp_path / "data" / "spool.db"
    await make_spool(path, 2000)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 4096 // 2 * 4096)
        f.write(random.Random(5).randbytes(4096))
    cfg = str(config(tmp_path))

    checked = cli("check", "--config", cfg)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert row(checked.stdout, "SQLite reads it whole").startswith("no: ")
    readable = int(row(checked.stdout, "batches readable").replace(",", ""))
    lost = int(row(checked.stdout, "batches lost (unreadable)").split()[0])
    assert readable + lost == 2000 and 0 < lost <= 100
    damaged = path.read_bytes()

    lock = SpoolLock(path).acquire()  # as a gateway running with this spool holds it
    try:
        refused = cli("salvage", "--config", cfg)
        in_use = cli("check", "--config", cfg)
    finally:
        lock.release()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "in use by another process" in refused.stderr and "stop it first" in refused.stderr
    assert "Traceback" not in refused.stderr and path.read_bytes() == damaged  # untouched
    assert row(in_use.stdout, "in use by a gateway") == "yes"

    salvaged = cli("salvage", "--config", cfg)

    assert salvaged.returncode == 0, salvaged.stdout + salvaged.stderr
    assert row(salvaged.stdout, "batches recovered") == f"{readable:,}"
    assert row(salvaged.stdout, "batches lost").startswith(f"{lost} batches (ids ")
    kept = Path(row(salvaged.stdout, "damaged file kept as"))
    assert kept.read_bytes() == damaged
    after = cli("check", "--config", cfg)
    assert after.returncode == 0, after.stdout
    assert row(after.stdout, "batches readable") == f"{readable:,}"
    assert row(after.stdout, "batches lost (unreadable)") == "0 batches"  # the hole it left is not a loss
    again = cli("salvage", "--config", cfg)
    assert again.returncode == 0 and "nothing to salvage" in again.stdout
