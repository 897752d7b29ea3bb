"""The backends the storage tests run against, and how to open a store on each.

"timescale" is TimescaleDB as the product runs it; "postgresql" is the same store with
TimescaleDB turned off (plain tables), the fallback for a server without the extension.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from storage.base import Store
from storage.open import open_store
from storage.timescale.store import TimescaleStore

BACKENDS = ["sqlite", "timescale", "postgresql"]


async def open_backend(backend: str, where: str, *, retention: timedelta | None = None,
                       gateway_id: str | None = None) -> Store:  # fmt: skip
    """An open, not yet migrated store: `where` is a file path (sqlite) or a DSN."""
    if backend == "sqlite":
        return await open_store("sqlite", sqlite_path=Path(where), retention=retention, gateway_id=gateway_id)
    if backend == "timescale":
        return await open_store("timescale", dsn=where, chunk_interval="1 day", retention=retention,
                                gateway_id=gateway_id)
    return await TimescaleStore.open(where, timescaledb=False, retention=retention, gateway_id=gateway_id)
