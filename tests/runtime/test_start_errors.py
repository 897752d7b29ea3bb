"""A gateway that cannot start says why in one message and exits 1: no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg


def test_a_store_refusing_the_migration_at_start_is_one_error_line(timescale_dsn: str, tmp_path: Path) -> None:
    # The store's task raises inside the gateway's TaskGroup, so the error reaches the
    # command line wrapped in an ExceptionGroup; it must still read as the store's message.
    config = tmp_path / "gateway.toml"
    info = psycopg.conninfo.conninfo_to_dict(timescale_dsn)
    config.write_text(f"""
[gateway]
id = "edge-1"
data_dir = "{tmp_path / 'data'}"
[api]
enabled = false
[storage]
backend = "timescale"
dsn = "host={info['host']} port={info['port']} user={info['user']} dbname={info['dbname']}"
chunk_interval = "seven days"
""")
    done = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "error:" in output and "migrate" in output and "seven days" in output, output
    assert "Traceback" not in output and "ExceptionGroup" not in output and "╭" not in output, output
