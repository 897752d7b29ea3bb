"""What only the PostgreSQL/TimescaleDB store promises: hypertables, mode detection,
bounded waits and SinkUnavailable while the server is down, recovery when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.errors import SinkError, SinkUnavailable
from gateway.model import Batch
from storage.timescale.store import TimescaleStore, _check_if_dropped
from tests.fixtures.ports import free_port
from tests.fixtures.timescale import PgCluster
from tests.storage.samples import reading, record_latest_batches


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
    assert rows == [("balances", "ts", "2 days"), ("events", "ts", "2 days"), ("readings", "ts", "2 days")]


async def test_migrations_are_recorded_once_even_when_gateways_race(timescale_dsn: str) -> None:
    stores = [await TimescaleStore.open(timescale_dsn) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        await stores[0].migrate()
    finally:
        for s in stores:
            await s.close()

    assert _query(timescale_dsn, "SELECT version, name FROM schema_migrations ORDER BY version") == [
        (1, "init"), (2, "wave2"), (3, "accounts"), (4, "gateway_id"), (5, "command_keys"),
        (6, "device_numbers_and_verification_keys"), (7, "special_reads"), (8, "reading_audit")]


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


# -- the change feed under concurrent transactions -----------------------------------------
async def test_feed_never_passes_a_seq_an_open_transaction_may_still_commit(
    ts_store: TimescaleStore, timescale_dsn: str
) -> None:
    """Writer A takes seq 2..4 and stays open; writer B takes 5..7 and commits; a reader
    must not get 5..7 (and move its cursor past 2..4) until A has committed."""
    from gateway.model import Reading
    from storage.timescale.ingest import write_batch

    # Seq 1, committed first: it also creates the chunk, which an open transaction would
    # otherwise hold locked against B (TimescaleDB creates chunks transactionally).
    await ts_store.write(Batch(readings=[reading("Z")]))
    async with await psycopg.AsyncConnection.connect(timescale_dsn) as a_conn:
        await a_conn.execute("SET TIME ZONE 'UTC'")
        await a_conn.execute("SELECT 1")  # A: open transaction (psycopg starts it implicitly)
        await write_batch(a_conn, Batch(readings=[reading("A", minutes=m) for m in range(3)]))

        await ts_store.write(Batch(readings=[reading("B", minutes=m) for m in range(3)]))  # B commits

        async with await psycopg.AsyncConnection.connect(timescale_dsn, autocommit=True) as peek:
            cur = await peek.execute("SELECT seq, meter_id FROM readings ORDER BY seq")
            # B committed seqs above A's uncommitted 2..4: commits out of seq order.
            assert await cur.fetchall() == [(1, "Z"), (5, "B"), (6, "B"), (7, "B")]
        page = await ts_store.feed(after=0)
        assert [r.meter_id for r in page.items] == ["Z"]  # B held back: A may still commit 2..4
        page = await ts_store.feed(after=page.next_after)
        assert page.items == [] and page.next_after == 1

        await a_conn.commit()

    seen: list[Reading] = []
    after = 0
    while page := await ts_store.feed(after=after, limit=2):
        if not page.items:
            break
        seen += page.items
        after = page.next_after
    assert [(r.meter_id, r.seq) for r in seen] == [("Z", 1), ("A", 2), ("A", 3), ("A", 4), ("B", 5), ("B", 6), ("B", 7)]


async def test_feed_is_not_held_back_by_a_rolled_back_writer_or_other_locks(
    ts_store: TimescaleStore, timescale_dsn: str
) -> None:
    from storage.timescale.ingest import write_batch

    await ts_store.write(Batch(readings=[reading("Z", minutes=1)]))  # creates the chunk (see above)
    async with await psycopg.AsyncConnection.connect(timescale_dsn) as conn:
        await write_batch(conn, Batch(readings=[reading("A")]))
        await conn.rollback()
        # Someone else's advisory locks (another application) do not count.
        await conn.execute("SELECT pg_advisory_xact_lock_shared(1), pg_advisory_xact_lock_shared(5, 6)")
        await ts_store.write(Batch(readings=[reading("B")]))
        page = await ts_store.feed(after=0)
        await conn.rollback()
    assert [r.meter_id for r in page.items] == ["Z", "B"]


# -- the write paths -------------------------------------------------------------------------
async def test_fast_and_careful_paths_store_the_same(ts_store: TimescaleStore, timescale_dsn: str) -> None:
    """The COPY fast path and the staging path give identical rows and counts."""
    batch = Batch(readings=[reading(m, minutes=i, value=i) for m in ("F", "C") for i in range(50)])
    fast = await ts_store.write(Batch(readings=[r for r in batch.readings if r.meter_id == "F"]))
    careful = await ts_store.write(Batch(readings=[r for r in batch.readings if r.meter_id == "C"]), fast=False)

    assert (fast.readings_inserted, careful.readings_inserted) == (50, 50)
    f = _query(timescale_dsn, "SELECT channel, ts, value, kind, quality, status, source FROM readings WHERE meter_id = 'F' ORDER BY ts")
    c = _query(timescale_dsn, "SELECT channel, ts, value, kind, quality, status, source FROM readings WHERE meter_id = 'C' ORDER BY ts")
    assert f == c


async def test_a_replayed_batch_falls_back_and_writes_nothing_twice(ts_store: TimescaleStore, timescale_dsn: str) -> None:
    first = Batch(readings=[reading(minutes=m, value=m) for m in range(100)])
    await ts_store.write(first)
    replay = Batch(readings=[*first.readings[50:], *(reading(minutes=m, value=m) for m in range(100, 120))])

    result = await ts_store.write(replay)  # COPY hits unique_violation, the careful path takes over

    assert (result.readings_inserted, result.readings_duplicate, result.conflicts) == (20, 50, [])
    rows, keys, top = _query(timescale_dsn, "SELECT count(*), count(DISTINCT ts), max(seq) FROM readings")[0]
    assert rows == keys == 120
    assert isinstance(top, int)


# -- license modes ------------------------------------------------------------------------
APACHE_REFUSAL = 'not supported under the current "apache" license'


async def test_community_statements_reach_timescaledb_and_are_refused_by_this_apache_build(
    ts_store: TimescaleStore, timescale_dsn: str
) -> None:
    """Each community statement parses, names real objects and gets to TimescaleDB, which
    refuses it for the license alone (a syntax or name error would be a different error)."""
    from datetime import timedelta

    from storage.timescale.policies import community_statements

    statements = community_statements(timedelta(days=400), timedelta(days=30))
    refused = []
    async with await psycopg.AsyncConnection.connect(timescale_dsn, autocommit=True) as conn:
        for sql in statements:
            if sql.startswith("SELECT remove_retention_policy"):
                continue  # also refused, but only after add_retention_policy could have run
            if sql.startswith("SELECT add_continuous_aggregate_policy"):
                # Needs the view the previous statement could not create: it gets as far
                # as resolving its argument, so it parsed.
                with pytest.raises(psycopg.errors.UndefinedTable, match='"readings_daily" does not exist'):
                    await conn.execute(sql)
                continue
            with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
                await conn.execute(sql)
            refused.append(sql)
            assert APACHE_REFUSAL in str(info.value) or "under the current \"apache\" license" in str(info.value), sql
    # compress, compression policy, retention policy per table; the reorder policy; the view
    assert len(refused) == 3 * 3 + 2


async def test_community_branch_is_taken_when_the_license_says_so(ts_store: TimescaleStore) -> None:
    """Migrate as if the license were 'timescale': the community set-up runs (and this
    Apache build refuses it, proving the branch reached TimescaleDB)."""
    from storage.timescale import policies

    assert policies.retention_mode("timescaledb-community", None) == "off"
    assert policies.retention_mode(policies.COMMUNITY, __import__("datetime").timedelta(days=1)) == "policy"
    assert policies.retention_mode(policies.APACHE, __import__("datetime").timedelta(days=1)) == "drop_chunks"
    assert policies.retention_mode(policies.PLAIN, __import__("datetime").timedelta(days=1)) == "delete"

    async def community(conn: object) -> str:
        return policies.COMMUNITY

    import storage.timescale.store as store_module

    original = store_module._mode_of
    store_module._mode_of = community
    try:
        with pytest.raises(SinkError, match="apache"):
            await ts_store.migrate()
    finally:
        store_module._mode_of = original
    assert (await ts_store.apply_retention()).mode == "off"  # no retention configured


async def test_mode_and_retention_are_logged(timescale_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    from datetime import timedelta

    caplog.set_level("INFO", logger="storage.timescale.store")
    async with await TimescaleStore.open(timescale_dsn, retention=timedelta(days=400)) as store:
        await store.migrate()
        assert store.retention_mode == "drop_chunks"
    assert "mode timescaledb-apache, retention 400 days, 0:00:00 by the gateway's scheduled drop_chunks" in caplog.text


async def test_connections_the_server_dropped_are_replaced_before_use(timescale_dsn: str) -> None:
    """The pool's checkout check: the pooled connection terminated by the server (as a restart
    or an administrator does), and the very next calls succeed: no caller is handed the dead
    connection. (With several dead ones the pool waits a second or more between failed
    checks, psycopg_pool's backoff, so one connection keeps this test quick.)"""
    async with await TimescaleStore.open(timescale_dsn, min_size=1, max_size=1, timeout=5.0) as store:
        await store.migrate()
        await store.ping()
        with psycopg.connect(timescale_dsn, autocommit=True) as conn:
            killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE application_name = 'meter-gateway' AND pid <> pg_backend_pid()"
                                  ).fetchone()
        assert killed is not None and killed[0] == 1
        await asyncio.sleep(0.2)  # the FATAL and the close reach our sockets
        for _ in range(6):
            await store.ping()
            assert await store.latest_readings("M-1") == []



async def test_checkout_check_makes_a_round_trip_only_for_a_dropped_connection(timescale_dsn: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    round_trips: list[int] = []
    real = AsyncConnectionPool.check_connection

    async def counted(conn: psycopg.AsyncConnection[object]) -> None:
        round_trips.append(conn.info.backend_pid)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    async with await psycopg.AsyncConnection.connect(timescale_dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        await _check_if_dropped(conn)
        assert round_trips == []
        with psycopg.connect(timescale_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        await asyncio.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            await _check_if_dropped(conn)
        assert round_trips == [pid]


async def test_a_row_that_does_not_convert_fails_only_its_own_meters_latest(ts_store: TimescaleStore,
                                                                          timescale_dsn: str) -> None:  # fmt: skip
    """"Latest" calls share one query under load (storage.coalesce); a row the model cannot
    read (here a channel name from some newer writer) must fail its own meter's callers, not
    the others' answered by the same query."""
    await ts_store.write(Batch(readings=[reading(meter_id=m) for m in ("M-1", "M-2", "M-3")]))
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        conn.execute("UPDATE readings SET channel = 'power_v2' WHERE meter_id = 'M-2'")
        conn.execute("UPDATE meter_channels SET channel = 'power_v2' WHERE meter_id = 'M-2'")
    batches = record_latest_batches(ts_store)
    assert batches is not None
    asked = ["M-0", "M-00", "M-1", "M-2", "M-3"]  # the first two take the free slots; the rest queue

    got = await asyncio.gather(*(ts_store.latest_readings(m) for m in asked), return_exceptions=True)

    assert ["M-1", "M-2", "M-3"] in batches, batches
    assert [[r.meter_id for r in g] if isinstance(g, list) else type(g) for g in got] == [
        [], [], ["M-1"], KeyError, ["M-3"]]
