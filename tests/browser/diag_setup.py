"""Shared by the diagnostics tests (api, browser, reliability): keys and a gateway with a config file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

from gateway.config.profiles import load_profiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from storage.keys import Scope, new_key


async def make_key(gw: Gateway, *scopes: Scope, name: str = "technician") -> dict[str, str]:
    """Store a fresh API key with `scopes` (default diag) and return its Authorization header."""
    await asyncio.wait_for(gw.store_ready.wait(), timeout=60)
    assert gw.store is not None
    key, row = new_key(name, frozenset(scopes or (Scope.DIAG,)), datetime.now(UTC))
    await gw.store.create_api_key(row)
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def running(cfg: GatewayConfig, *, config_path: Path | None = None
                  ) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """Like tests.fixtures.gateway.running_gateway, with the config file the gateway reports."""
    gw = Gateway(cfg, load_profiles(), config_path=config_path)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="gateway-under-test")
    try:
        started = asyncio.create_task(gw.started.wait())
        done, _ = await asyncio.wait([started, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert started in done, "gateway did not start within 30 s"
        assert gw.api_url is not None
        async with httpx.AsyncClient(base_url=gw.api_url, timeout=10) as client:
            yield gw, client
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
