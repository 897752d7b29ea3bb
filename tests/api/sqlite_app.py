"""create_app over a fresh SQLite store, for API tests whose subject is HTTP, not the data."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from api.app import create_app
from storage.base import Store
from storage.keys import Scope, new_key
from storage.open import open_store


async def make_key(store: Store, *scopes: Scope) -> str:
    """A stored key with `scopes`; returns the key to send."""
    key, row = new_key("test", frozenset(scopes), datetime.now(UTC))
    await store.create_api_key(row)
    return key


@contextlib.asynccontextmanager
async def sqlite_api(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[FastAPI, Store, httpx.AsyncClient]]:
    """(app, store, client) with an admin key; `options` go to create_app."""
    async with await open_store("sqlite", sqlite_path=tmp_path / "store.db") as store:
        await store.migrate()
        key = await make_key(store, Scope.ADMIN)
        app = create_app(store, key_cache_ttl=0, **options)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            yield app, store, client
