"""The migration loader and `open_store`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.errors import SinkError
from storage.migrate import Migration, load_migrations, pending
from storage.open import open_store
from storage.sqlite.store import SqliteStore
from storage.timescale.store import TimescaleStore

_names = itertools.count()


def _package(root: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A throw-away package with schema/ files; a new name each time (imports are cached)."""
    name = f"mg_fake_schema_{next(_names)}"
    schema = root / name / "schema"
    schema.mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    for file, text in files.items():
        (schema / file).write_text(text)
    monkeypatch.syspath_prepend(str(root))
    return name


@pytest.mark.parametrize("package", ["storage.sqlite", "storage.timescale"])
def test_shipped_migrations_load_in_order(package: str) -> None:
    migrations = load_migrations(package)

    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1 and migrations[0].name == "init"
    assert "CREATE TABLE readings" in migrations[0].sql


def test_migrations_are_ordered_by_number_not_by_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _package(tmp_path, {"0010_later.sql": "-- 10", "0002_second.sql": "-- 2", "README": "x"}, monkeypatch)

    assert load_migrations(package) == [Migration(2, "second", "-- 2"), Migration(10, "later", "-- 10")]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_init.sql": ""}, r"1_init\.sql: name must look like 0001_init\.sql"),
        ({"0001_a.sql": "", "0001_b.sql": ""}, "version 1 is already used by"),
        ({}, "no migrations found"),
    ],
)
def test_bad_migration_folders_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], message: str
) -> None:
    package = _package(tmp_path, files, monkeypatch)

    with pytest.raises(SinkError, match=message):
        load_migrations(package)


def test_pending_keeps_order_and_skips_applied() -> None:
    steps = [Migration(v, f"m{v}", "") for v in (1, 2, 3)]
    assert pending(steps, {2}) == [steps[0], steps[2]]
    assert pending(steps, {1, 2, 3}) == []


async def test_open_store_sqlite_is_a_context_manager(tmp_path: Path) -> None:
    async with await open_store("sqlite", sqlite_path=tmp_path / "s.db") as store:
        assert isinstance(store, SqliteStore)
        await store.migrate()
        await store.ping()
    assert (tmp_path / "s.db").exists()


async def test_open_store_timescale(timescale_dsn: str) -> None:
    async with await open_store("timescale", dsn=timescale_dsn) as store:
        assert isinstance(store, TimescaleStore)
        await store.ping()


@pytest.mark.parametrize(
    ("backend", "kwargs", "message"),
    [
        ("mysql", {}, r"store backend 'mysql': unknown \(known: sqlite, timescale\)"),
        ("sqlite", {}, "store backend 'sqlite': sqlite_path is required"),
        ("timescale", {}, "store backend 'timescale': dsn is required"),
    ],
)
async def test_open_store_refuses_bad_arguments(backend: str, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SinkError, match=message):
        await open_store(backend, **kwargs)  # type: ignore[arg-type]
