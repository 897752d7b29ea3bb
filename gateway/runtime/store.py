"""The store as the gateway opens and keeps it: the configured backend, the local key mirror, and
the maintenance runs (retention, reordering closed chunks)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path

from gateway.config.periods import parse_period
from gateway.config.schema import GatewayConfig, StorageSection
from gateway.errors import SinkError
from storage.base import Store
from storage.open import ManagedStore, open_store

log = logging.getLogger(__name__)


async def newest_reading(store: Store | None, ready: asyncio.Event, meter_id: str, wait: float = 30.0
                         ) -> datetime | None:
    """The time of the meter's newest stored reading (a driver's backfill after a restart); None when the
    store is not ready within `wait` s: the driver starts without it rather than wait for ever."""
    try:
        await asyncio.wait_for(ready.wait(), timeout=wait)
    except TimeoutError:
        return None
    assert store is not None
    return max((r.ts for r in await store.latest_readings(meter_id)), default=None)


def retention_of(config: GatewayConfig) -> timedelta | None:
    """storage.retention as a period (validated at load), or None: keep for ever."""
    return None if config.storage.retention is None else parse_period(config.storage.retention)


async def open_configured_store(config: GatewayConfig) -> ManagedStore:
    """The store that `config` names, open (not migrated), stamping the gateway's id on what it writes."""
    st = config.storage
    return await open_store(st.backend, sqlite_path=config.data_path(st.sqlite_path), dsn=st.dsn,
                            chunk_interval=st.chunk_interval, retention=retention_of(config),
                            gateway_id=config.gateway.id,
                            estimate_window=parse_period(st.billing_estimate_window))  # fmt: skip


def key_mirror(config: GatewayConfig) -> Path:
    """The local copy of API key hashes that authenticates while the store is down (api.auth.KeyCache)."""
    return config.data_path(Path("api_keys.json"))


async def maintain(store: Store, storage: StorageSection, ready: asyncio.Event) -> None:
    """Every `storage.retention_check` seconds: drop data older than `storage.retention`
    (the store knows how: drop_chunks, DELETE, or nothing where TimescaleDB's own
    policy does it), then, with `storage.reorder_chunks`, reorder closed readings chunks
    by meter (TimescaleDB, Apache license; no chunk started after a minute of a run). A
    store that is down is simply tried again next time."""
    if storage.retention is None and not storage.reorder_chunks:
        return
    await ready.wait()
    while True:
        if storage.retention is not None:
            try:
                await store.apply_retention()
            except SinkError as exc:
                log.warning("retention run failed (tried again in %.0f s): %s", storage.retention_check, exc)
        if storage.reorder_chunks:
            try:
                await store.reorder()
            except SinkError as exc:
                log.warning("reordering readings chunks failed (tried again in %.0f s): %s",
                            storage.retention_check, exc)
        await asyncio.sleep(storage.retention_check)


__all__ = ["key_mirror", "maintain", "newest_reading", "open_configured_store", "retention_of"]
