"""API tests: `api` is an HTTP client on create_app over a copy of real simulator data, in
every store (SQLite and TimescaleDB); `keys` holds a key per scope."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from storage.base import Store
from storage.keys import Scope, new_key
from storage.open import open_store
from tests.api.dataset import Dataset, build, copy_postgres, copy_sqlite
from tests.fixtures.timescale import PgCluster

STORES = ["sqlite", "timescale"]


@pytest.fixture(scope="session")
def dataset(pg_cluster: PgCluster) -> Iterator[tuple[Dataset, str]]:
    with tempfile.TemporaryDirectory(prefix="mg-api-data-") as root:
        data, template = build(Path(root), pg_cluster)
        yield data, template


@dataclass
class Keys:
    read: str
    write: str
    diag: str
    admin: str

    def header(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, scope)}"}


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                dataset: tuple[Dataset, str]) -> AsyncIterator[Store]:
    """A migrated store holding a fresh copy of the dataset."""
    data, template = dataset
    if request.param == "sqlite":
        opened = await open_store("sqlite", sqlite_path=copy_sqlite(data, tmp_path))
        name = None
    else:
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        name = copy_postgres(cluster, template)
        opened = await open_store("timescale", dsn=cluster.dsn(name))
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()
        if name is not None:
            request.getfixturevalue("pg_cluster").drop_database(name)


@pytest.fixture
async def keys(store: Store) -> Keys:
    made = {}
    for scope in Scope:
        key, row = new_key(f"test-{scope.value}", frozenset({scope}), datetime.now(UTC))
        await store.create_api_key(row)
        made[scope.value] = key
    return Keys(**made)


@pytest.fixture
async def api(store: Store, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the admin key on create_app(store) (no running gateway)."""
    app = create_app(store, key_cache_ttl=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                 headers=keys.header("admin")) as client:
        yield client
