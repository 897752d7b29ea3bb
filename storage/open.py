"""Open the configured store: the one place that knows both backends' constructors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from gateway.errors import SinkError
from storage.base import Store
from storage.boundary import DEFAULT_ESTIMATE_WINDOW

BACKENDS = ("sqlite", "timescale")


class ManagedStore(Store, Protocol):
    """A `Store` that is also an async context manager: `__aexit__` closes it."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...  # fmt: skip


async def open_store(backend: str, *, sqlite_path: Path | None = None, dsn: str | None = None,
                     chunk_interval: str = "7 days", retention: timedelta | None = None,
                     gateway_id: str | None = None,
                     estimate_window: timedelta = DEFAULT_ESTIMATE_WINDOW) -> ManagedStore:  # fmt: skip
    """Open the store of `backend` ("sqlite" with `sqlite_path`, "timescale" with `dsn`).

    The store is open but not migrated: call `await store.migrate()`. Close it with
    `await store.close()` or use it as `async with`. A TimescaleDB that is down does not
    make this fail; the store's calls raise SinkUnavailable until it is back.
    `retention`: how long data is kept (None: for ever); see `Store.apply_retention`.
    `gateway_id`: stamped on every row the store writes (SPEC §8: several gateways, one
    database). `estimate_window`: how far before a period's boundary a real read still wins
    over a newer estimate (storage.consumption).
    """
    if backend == "sqlite":
        if sqlite_path is None:
            msg = "store backend 'sqlite': sqlite_path is required"
            raise SinkError(msg)
        from storage.sqlite.store import SqliteStore

        return await SqliteStore.open(sqlite_path, retention=retention, gateway_id=gateway_id,
                                      estimate_window=estimate_window)
    if backend == "timescale":
        if not dsn:
            msg = "store backend 'timescale': dsn is required"
            raise SinkError(msg)
        # Imported here so that an embedded-only install never loads psycopg.
        from storage.timescale.store import TimescaleStore

        return await TimescaleStore.open(dsn, chunk_interval=chunk_interval, retention=retention,
                                         gateway_id=gateway_id, estimate_window=estimate_window)
    msg = f"store backend {backend!r}: unknown (known: {', '.join(BACKENDS)})"
    raise SinkError(msg)
