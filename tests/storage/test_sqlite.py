"""What only the embedded SQLite store promises: WAL, recorded migrations, index use."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import SinkError, SinkUnavailable
from gateway.model import Batch, Channel, Status
from storage.records import Conflict, SilentRule
from storage.sqlite.store import SqliteStore, _statements
from tests.storage.samples import T0, meter, reading


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "data" / "store.db") as store:
        await store.migrate()
        yield store


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_database_is_in_wal_mode(sqlite_store: SqliteStore) -> None:
    assert _query(sqlite_store.path, "PRAGMA journal_mode") == [("wal",)]


async def test_migrations_are_recorded_once(sqlite_store: SqliteStore) -> None:
    await sqlite_store.migrate()

    rows = _query(sqlite_store.path, "SELECT version, name FROM schema_migrations")
    assert rows == [(1, "init"), (2, "wave2"), (3, "accounts"), (4, "gateway_id"),
                    (5, "readings_cover"), (6, "command_keys"), (7, "device_numbers_and_verification_keys"),
                    (8, "special_reads"), (9, "reading_audit"), (10, "drop_readings_meter_ts")]
    tables = {r[0] for r in _query(sqlite_store.path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meters", "readings", "balances", "events", "deadletters", "assignments", "api_keys",
            "verification_log", "commands", "special_reads", "schema_migrations"} <= tables  # fmt: skip


async def _write_two_meters(store: SqliteStore) -> None:
    """M-1 and M-2, power and energy_import, 20 one-minute readings each from T0."""
    await store.write(Batch(readings=[
        reading(meter_id=m, channel=c, minutes=i) for m in ("M-1", "M-2") for c in (Channel.POWER,
        Channel.ENERGY_IMPORT) for i in range(20)
    ]))  # fmt: skip


def _assert_seeks(path: Path, statements: list[str]) -> None:
    """Every statement reads readings through an index, and a (ts, channel) order needs no sort."""
    for sql in statements:
        plan = [row[3] for row in _query(path, f"EXPLAIN QUERY PLAN {sql}")]
        scans = [step for step in plan if re.match(r"SCAN (readings|r)\b", str(step))]
        assert scans == [], f"{sql}\nscans readings: {plan}"
        if "ORDER BY ts, channel" in sql:
            assert "USE TEMP B-TREE FOR ORDER BY" not in plan, f"{sql}\nsorts instead of walking an index: {plan}"


async def test_reader_queries_seek_indexes_instead_of_scanning_readings(sqlite_store: SqliteStore) -> None:
    """The API's reads of readings must not read a meter's history nor the table: latest_readings,
    readings (one channel, every channel, by status), last_cumulative, and the fleet's activity
    (silent meters, fleet counts, meter activity), which probe each meter's newest reading."""
    await _write_two_meters(sqlite_store)
    await sqlite_store.upsert_meters([meter("M-1"), meter("M-2")])
    rule = SilentRule(now=T0 + timedelta(hours=1), since=T0, default_after=timedelta(minutes=5))
    traced: list[str] = []
    await sqlite_store._reader.set_trace_callback(traced.append)

    await sqlite_store.latest_readings("M-1")
    await sqlite_store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), limit=5,
                                after=(T0, Channel.POWER.value))  # fmt: skip
    await sqlite_store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), status=Status.VALID)
    await sqlite_store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), channel=Channel.POWER)
    await sqlite_store.last_cumulative()
    silent = await sqlite_store.silent_meters(rule)
    await sqlite_store.fleet_counts(rule)
    await sqlite_store.meter_activity(since=T0)
    await sqlite_store._reader.set_trace_callback(None)  # type: ignore[arg-type]  # None unsets it

    assert [m.meter_id for m in silent] == ["M-1", "M-2"]  # last seen at T0 + 19 min
    assert {m.last_seen for m in silent} == {T0 + timedelta(minutes=19)}
    selects = [sql for sql in traced if "readings" in sql]
    assert len(selects) == 8
    _assert_seeks(sqlite_store.path, selects)


async def test_writer_reads_and_deletes_of_a_meter_seek_indexes(sqlite_store: SqliteStore) -> None:
    """Retention's per-meter delete and the installed_at check count a meter's old readings
    through one index range per channel, not the meter's whole history."""
    await _write_two_meters(sqlite_store)
    await sqlite_store.upsert_meters([meter("M-1")])
    traced: list[str] = []
    await sqlite_store._writer.set_trace_callback(traced.append)

    with pytest.raises(Conflict):  # readings lie before it
        await sqlite_store.update_meter("M-1", {"installed_at": T0 + timedelta(minutes=10)}, at=T0)
    sqlite_store.retention = timedelta(days=1)
    removed = await sqlite_store.apply_retention(T0 + timedelta(days=1, minutes=10))
    await sqlite_store._writer.set_trace_callback(None)  # type: ignore[arg-type]  # None unsets it

    assert removed.removed["readings"] == 2 * 2 * 10
    statements = [sql for sql in traced if re.search(r"FROM readings WHERE meter_id", sql)]
    assert len(statements) == 3  # the check, and a delete per meter
    _assert_seeks(sqlite_store.path, statements)


async def test_upgrade_drops_the_meter_ts_index_and_reads_the_same(tmp_path: Path) -> None:
    """Version 10 drops readings_meter_ts (every index costs every insert, issue 26); a store
    written before it answers the same reads after the upgrade."""
    async with await SqliteStore.open(tmp_path / "store.db") as store:
        await store.migrate(upto=9)
        await _write_two_meters(store)
        before = await store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), limit=100)
        assert "readings_meter_ts" in _indexes(store.path)

        await store.migrate()

        assert _indexes(store.path) == {"readings_cover", "readings_flagged", "sqlite_autoindex_readings_1"}
        after = await store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), limit=100)
        assert after == before
        assert [(r.ts, r.channel) for r in after] == sorted((r.ts, r.channel) for r in after)
        assert len(after) == 40


def _indexes(path: Path) -> set[str]:
    return {str(r[0]) for r in _query(path, "SELECT name FROM sqlite_master WHERE type = 'index'"
                                            " AND tbl_name = 'readings'")}


async def test_one_channel_range_reads_only_the_covering_index(sqlite_store: SqliteStore) -> None:
    """A meter's readings of one channel come from readings_cover alone: in the table they lie in
    arrival order, one page per row for a month of a busy store (migration 0005)."""
    await _write_two_meters(sqlite_store)
    traced: list[str] = []
    await sqlite_store._reader.set_trace_callback(traced.append)
    got = await sqlite_store.readings("M-1", start=T0, end=T0 + timedelta(hours=1), channel=Channel.POWER)
    await sqlite_store._reader.set_trace_callback(None)  # type: ignore[arg-type]  # None unsets it

    assert [r.ts for r in got] == [T0 + timedelta(minutes=i) for i in range(20)]
    (sql,) = [sql for sql in traced if "readings" in sql]
    plan = [str(row[3]) for row in _query(sqlite_store.path, f"EXPLAIN QUERY PLAN {sql}")]
    assert any("COVERING INDEX readings_cover" in step for step in plan), plan


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    await store.close()
    await store.close()  # twice is fine

    with pytest.raises(SinkUnavailable, match="closed"):
        await store.ping()
    with pytest.raises(SinkError, match=re.escape(str(tmp_path / "store.db"))):
        await store.write(Batch(readings=[reading()]))


async def test_locked_database_is_unavailable_not_an_error(tmp_path: Path) -> None:
    """Another process holding the write lock past busy_timeout: try again later."""
    path = tmp_path / "store.db"
    async with await SqliteStore.open(path, busy_timeout=0.1) as store:
        await store.migrate()
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(SinkUnavailable, match="database unavailable"):
                await store.write(Batch(readings=[reading()]))
        finally:
            blocker.close()
        assert (await store.write(Batch(readings=[reading()]))).readings_inserted == 1


def test_migration_scripts_split_into_whole_statements() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x INTEGER); CREATE TABLE b (y TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO b VALUES ('x');
        DELETE FROM b WHERE y = ';';
    END;
    -- trailing comment
    """
    statements = _statements(script)

    assert len(statements) == 3
    assert statements[1].startswith("CREATE TABLE b")
    assert statements[2].startswith("CREATE TRIGGER t") and statements[2].endswith("END;")
    with pytest.raises(SinkError, match="incomplete statement"):
        _statements("CREATE TABLE c (x INTEGER)")
