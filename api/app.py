"""create_app(store, gateway) -> FastAPI. No globals: each test builds its own app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from api import errors
from api.auth import KeyCache
from api.ports import GatewayPort
from api.ratelimit import BusLimiter
from api.routes import accounts, diag, events, health, imports, meters, payg, readings, status_page
from api.schemas.common import ERRORS
from gateway import __version__
from storage.base import Store


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(store: Store, gateway: GatewayPort | None = None, *, key_cache_ttl: float = 5.0,
               raw_reads_per_second: float = 2.0, raw_read_burst: int = 4,
               clock: Callable[[], datetime] = _utcnow, key_mirror: Path | None = None) -> FastAPI:
    """The API over `store` (and the running `gateway`, when there is one).

    `key_cache_ttl`: seconds a looked-up API key is trusted before it is read again, so a
    revoked key stops working within that time (0: every request reads it).
    `raw_reads_per_second` / `raw_read_burst`: technicians' poll-now and raw reads allowed per
    Modbus endpoint (a bus), so nobody can flood one.
    `clock`: "now" for default time ranges, move-in checks and the fleet summary (tests move it).
    `key_mirror`: a local file of key hashes that answers while the store is down (see KeyCache).
    """
    app = FastAPI(
        title="meter-gateway",
        version=__version__,
        description="Meter readings, consumption, billing reads and PAYG balances for account systems; "
        "diagnostics for technicians.",
    )
    app.state.store = store
    app.state.gateway = gateway
    app.state.key_cache = KeyCache(ttl=key_cache_ttl, mirror=key_mirror)
    app.state.clock = clock
    app.state.bus_limiter = BusLimiter(raw_reads_per_second, raw_read_burst)
    errors.install(app)
    app.include_router(health.router)
    for router in (imports.router, meters.router, readings.router, accounts.router, payg.router, events.router):
        app.include_router(router, responses=ERRORS)
    app.include_router(diag.router, responses=ERRORS)
    app.include_router(status_page.router, responses=ERRORS)
    return app
