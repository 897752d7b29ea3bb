"""The gateway's data files are private whatever the umask: the data directory 0700, every database,
WAL, shared-memory, lock and key file 0600 (readings, balances and key hashes are nobody else's)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.fixtures.gateway import eventually, gateway_config, running_gateway


async def test_data_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    old = os.umask(0o022)
    try:
        # Left by an earlier version under this umask: a world-readable directory and store.
        data.mkdir(mode=0o755)
        os.close(os.open(data / "store.db", os.O_CREAT | os.O_WRONLY, 0o644))
        assert stat.S_IMODE((data / "store.db").stat().st_mode) == 0o644
        async with running_gateway(gateway_config(data)) as (gw, api):
            await eventually(lambda: gw.store_ready.is_set())
            assert (await api.get("/v1/diag/status")).status_code == 200
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
            directory = stat.S_IMODE(data.stat().st_mode)
    finally:
        os.umask(old)
    assert directory == 0o700
    assert modes == dict.fromkeys(["store.db", "store.db-wal", "store.db-shm", "spool.db", "spool.db-wal",
                                   "spool.db-shm", "spool.db.lock", "api_keys.json"], 0o600)
