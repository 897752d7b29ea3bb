"""What only the PostgreSQL/TimescaleDB store promises: hypertables, mode detection,
bounded waits and SinkUnavailable while the server is down, recovery when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from gateway.errors import SinkError, SinkUnavailable
from gateway.model import Batch
from storage.timescale.store import TimescaleStore
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster
from tests.storage.samples import reading


@pytest.fixture
async def ts_store(timescale_dsn: str) -> AsyncIterator[TimescaleStore]:
    """A migrated store whose pool gives up on a connection after 1 s."""
    async with await TimescaleStore.open(timescale_dsn, chunk_interval="2 days", timeout=1.0) as store:
        await store.migrate()
        yield store


def _query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


async def test_mode_is_timescaledb_apache_on_this_build(ts_store: TimescaleStore) -> None:
    assert ts_store.mode == "timescaledb-apache"


async def test_readings_and_balances_are_hypertables_with_the_chunk_interval(
    ts_store: TimescaleStore, timescale_dsn: str
) -> None:
    rows = _query(
        timescale_dsn,
        "SELECT hypertable_name, column_name, time_interval::text FROM timescaledb_information.dimensions"
        " ORDER BY hypertable_name",
    )
    assert rows == [("balances", "ts", "2 days"), ("readings", "ts", "2 days")]


async def test_migrations_are_recorded_once_even_when_gateways_race(timescale_dsn: str) -> None:
    stores = [await TimescaleStore.open(timescale_dsn) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        await stores[0].migrate()
    finally:
        for s in stores:
            await s.close()

    assert _query(timescale_dsn, "SELECT version, name FROM schema_migrations") == [(1, "init")]


async def test_plain_postgresql_mode_makes_no_hypertables(timescale_dsn: str) -> None:
    async with await TimescaleStore.open(timescale_dsn, timescaledb=False) as store:
        await store.migrate()
        assert store.mode == "postgresql"

    assert _query(timescale_dsn, "SELECT extname FROM pg_extension WHERE extname = 'timescaledb'") == []


async def test_bad_chunk_interval_is_a_sink_error_naming_the_migration(timescale_dsn: str) -> None:
    async with await TimescaleStore.open(timescale_dsn, chunk_interval="fortnightly") as store:
        with pytest.raises(SinkError, match="fortnightly") as info:
            await store.migrate()
    assert not isinstance(info.value, SinkUnavailable)
    assert "0001_init.sql" in "".join(getattr(info.value.__cause__, "__notes__", []))


async def test_ping_and_write_are_unavailable_while_the_server_is_stopped(
    ts_store: TimescaleStore, pg_cluster: PgCluster
) -> None:
    await ts_store.ping()
    pg_cluster.stop("fast")  # the timescale_dsn fixture starts it again

    with pytest.raises(SinkUnavailable, match="database unavailable") as info:
        await ts_store.ping()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    with pytest.raises(SinkUnavailable):
        await ts_store.write(Batch(readings=[reading()]))


async def test_store_recovers_after_a_crash_and_restart(ts_store: TimescaleStore, pg_cluster: PgCluster) -> None:
    await ts_store.write(Batch(readings=[reading(minutes=0)]))
    pg_cluster.stop("immediate")
    with pytest.raises(SinkUnavailable):
        await ts_store.write(Batch(readings=[reading(minutes=1)]))

    pg_cluster.start()

    await ts_store.ping()
    result = await ts_store.write(Batch(readings=[reading(minutes=0), reading(minutes=1)]))
    assert (result.readings_inserted, result.readings_duplicate) == (1, 1)


async def test_unreachable_database_does_not_block_open_and_is_unavailable() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=nowhere"
    async with await TimescaleStore.open(dsn, timeout=0.5) as store:
        assert store.mode == "unknown"
        with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1:\d+/nowhere: ping: database unavailable"):
            await store.ping()
        with pytest.raises(SinkUnavailable, match="migrate"):
            await store.migrate()


async def test_unparsable_dsn_is_refused_without_showing_it() -> None:
    with pytest.raises(SinkError, match="DSN is neither") as info:
        await TimescaleStore.open("host=db password=s3cret port")
    assert "s3cret" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_close_twice_then_calls_are_refused(timescale_dsn: str) -> None:
    store = await TimescaleStore.open(timescale_dsn)
    await store.close()
    await store.close()

    with pytest.raises(SinkError, match="closed") as info:
        await store.ping()
    assert not isinstance(info.value, SinkUnavailable)
