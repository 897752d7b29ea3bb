"""The `store` fixture: a migrated store of every backend (see backends.BACKENDS), so one
test covers them all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.base import Store
from tests.storage.backends import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a fresh SQLite file, or a fresh database in the test cluster."""
    backend: str = request.param
    if backend == "sqlite":
        return backend, str(tmp_path / "store.db")
    return backend, request.getfixturevalue("timescale_dsn")


@pytest.fixture
async def store(store_target: tuple[str, str]) -> AsyncIterator[Store]:
    """A migrated, empty store of the parametrised backend; closed after the test."""
    opened = await open_backend(*store_target)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def second_store(store_target: tuple[str, str]) -> AsyncIterator[Store]:
    """Another store on the same database, as a second gateway sharing it would have."""
    opened = await open_backend(*store_target)
    try:
        yield opened
    finally:
        await opened.close()
