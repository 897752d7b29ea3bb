"""create_app(store, gateway) -> FastAPI. No globals: each test builds its own app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api import errors
from api.admission import Admission, AdmissionCounts, AdmissionLimits
from api.auth import KeyCache
from api.cim.tables import CimTables, load_tables
from api.deps import ApiStore
from api.guard import RequestGuard
from api.headers import SecurityHeaders
from api.methods import MethodTable, OptionsResponder
from api.ports import GatewayPort
from api.ratelimit import BusLimiter
from api.routes import (
    accounts,
    cim,
    diag,
    docs,
    events,
    greenbutton,
    health,
    imports,
    meters,
    payg,
    readings,
    reads,
    status_page,
)
from api.schemas.common import ERRORS
from gateway import __version__

#: Largest JSON request body, in bytes, unless [api] max_body_bytes says otherwise.
DEFAULT_MAX_BODY = 1024 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(store: ApiStore, gateway: GatewayPort | None = None, *, key_cache_ttl: float = 5.0,
               raw_reads_per_second: float = 2.0, raw_read_burst: int = 4,
               clock: Callable[[], datetime] = _utcnow, key_mirror: Path | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, allowed_hosts: Sequence[str] = (),
               admission: AdmissionLimits | None = None, cim_tables: CimTables | None = None) -> FastAPI:
    """The API over `store` (and the running `gateway`, when there is one).

    `key_cache_ttl`: seconds a looked-up API key is trusted before it is read again, so a
    revoked key stops working within that time (0: every request reads it).
    `raw_reads_per_second` / `raw_read_burst`: technicians' poll-now and raw reads allowed per
    Modbus endpoint (a bus), so nobody can flood one.
    `clock`: "now" for default time ranges, move-in checks and the fleet summary (tests move it).
    `key_mirror`: a local file of key hashes that answers while the store is down (see KeyCache).
    `max_body_bytes`: the largest request body of a JSON route (the CSV import has its own limit).
    `allowed_hosts`: the Host names the API answers to (patterns as '*.example.com'); empty: any.
    `admission`: how many requests are worked on at once; more are answered 503 (api.admission).
    `cim_tables`: the CIM code tables (api.cim.tables; default: the shipped ones).
    """
    app = FastAPI(
        title="meter-gateway",
        version=__version__,
        description="Meter readings, consumption, billing reads and PAYG balances for account systems; "
        "diagnostics for technicians.",
        # The documentation pages are served from the gateway itself (api.routes.docs), and a
        # path with a trailing slash is a 404 with a hint, not a redirect: Starlette's would be
        # an absolute URL built from the request's Host header.
        docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None, redirect_slashes=False,
    )
    app.state.store = store
    app.state.gateway = gateway
    app.state.key_cache = KeyCache(ttl=key_cache_ttl, mirror=key_mirror)
    app.state.clock = clock
    app.state.bus_limiter = BusLimiter(raw_reads_per_second, raw_read_burst)
    app.state.admission = AdmissionCounts()
    app.state.cim_tables = cim_tables or load_tables()
    app.include_router(health.router)
    for router in (imports.router, meters.router, readings.router, accounts.router, payg.router, events.router,
                   cim.router, greenbutton.router, reads.router):
        app.include_router(router, responses=ERRORS)
    app.include_router(diag.router, responses=ERRORS)
    app.include_router(status_page.router, responses=ERRORS)
    app.include_router(docs.router)
    methods = MethodTable(app.routes)
    errors.install(app, methods)
    # Added innermost first: a request meets Admission (503 beyond the bound), SecurityHeaders, the host check, RequestGuard
    # (body limit, then key, before the body is read), OPTIONS, then the routes.
    app.add_middleware(OptionsResponder, table=methods)
    app.add_middleware(RequestGuard, routes=app.routes, default_max=max_body_bytes)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Admission, limits=admission, counts=app.state.admission)
    return app
