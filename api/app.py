"""create_app(store, gateway) -> FastAPI. No globals: each test builds its own app."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.ports import GatewayPort
from api.routes import health, meters
from gateway import __version__
from storage.base import Store


def create_app(store: Store, gateway: GatewayPort | None = None) -> FastAPI:
    app = FastAPI(
        title="meter-gateway",
        version=__version__,
        description="Meter readings, consumption, billing reads and PAYG balances for account systems; "
        "diagnostics for technicians.",
    )
    app.state.store = store
    app.state.gateway = gateway
    errors.install(app)
    app.include_router(health.router)
    app.include_router(meters.router)
    return app
