"""Reordering closed readings chunks by meter (TimescaleDB, Apache license): `Store.reorder`.

Readings arrive interleaved by meter; CLUSTER on the chunk's (meter_id, channel, ts) index
rewrites a closed chunk so that one meter's stretch is contiguous. Checked on the heap
itself (ctid order), not on timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.model import Batch, Channel
from storage.sqlite.store import SqliteStore
from storage.timescale import policies
from storage.timescale.store import TimescaleStore
from tests.storage.samples import T0, reading

CHANNELS = (Channel.ENERGY_IMPORT, Channel.POWER)
METERS = ("M-1", "M-2", "M-3")
#: Four days of 15-minute reads in 1-day chunks: chunks end at T0's midnight + 1..5 days.
DAYS = 4
MIDNIGHT = T0.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def store(timescale_dsn: str) -> AsyncIterator[TimescaleStore]:
    async with await TimescaleStore.open(timescale_dsn, chunk_interval="1 day", timeout=3.0) as s:
        await s.migrate()
        # As polls arrive: every meter's reads of one interval together.
        batch = [reading(m, ch, minutes=15 * i, value=float(i)) for i in range(DAYS * 96)
                 for m in METERS for ch in CHANNELS]  # fmt: skip
        await s.write(Batch(readings=batch))
        yield s


def _chunks(dsn: str) -> list[tuple[str, bool]]:
    """(schema.chunk, key index clustered) of every readings chunk, oldest first."""
    with psycopg.connect(dsn) as conn:
        return [(f"{r[0]}.{r[1]}", r[2]) for r in conn.execute(
            "SELECT c.chunk_schema, c.chunk_name, i.indisclustered FROM timescaledb_information.chunks AS c"
            " JOIN _timescaledb_catalog.chunk AS k ON k.schema_name = c.chunk_schema AND k.table_name = c.chunk_name"
            " JOIN _timescaledb_catalog.chunk_index AS ci ON ci.chunk_id = k.id"
            "  AND ci.hypertable_index_name = 'readings_key'"
            " JOIN pg_index AS i ON i.indexrelid = format('%I.%I', c.chunk_schema, ci.index_name)::regclass"
            " WHERE c.hypertable_name = 'readings' ORDER BY c.range_start").fetchall()]  # fmt: skip


def _heap(dsn: str, chunk: str) -> list[tuple[object, ...]]:
    """The chunk's rows in physical order: (meter_id, channel, ts, value, seq)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT meter_id, channel, ts, value, seq FROM {chunk} ORDER BY ctid").fetchall()


def _all(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT seq, meter_id, channel, ts, value, kind, status, received_at FROM readings"
                            " ORDER BY seq").fetchall()  # fmt: skip


async def test_closed_chunks_are_rewritten_in_meter_order_and_nothing_else_changes(
    store: TimescaleStore, timescale_dsn: str
) -> None:
    chunks = _chunks(timescale_dsn)
    assert len(chunks) == DAYS + 1  # T0 is at noon: the reads end half-way through a fifth day
    first = _heap(timescale_dsn, chunks[0][0])
    assert [r[:3] for r in first] != sorted(r[:3] for r in first)  # as written: interleaved by meter
    before = _all(timescale_dsn)
    # "Now" is 6 h after the third chunk ended: chunks 1-3 are closed, 4 and 5 not yet.
    now = MIDNIGHT + timedelta(days=3) + policies.REORDER_AFTER

    result = await store.reorder(now)

    assert result.mode == "cluster"
    assert list(result.reordered) == [c for c, _ in reversed(chunks[:3])]  # newest first
    assert (result.busy, result.left) == ((), 0)
    for chunk, clustered in _chunks(timescale_dsn):
        heap = _heap(timescale_dsn, chunk)
        in_order = [r[:3] for r in heap] == sorted(r[:3] for r in heap)
        assert in_order == clustered == (chunk in result.reordered), chunk
    assert _all(timescale_dsn) == before  # same rows, same seqs: the feed does not see it
    # What the order is for: one meter's channel, read back by the store as before.
    got = await store.readings("M-2", start=T0, end=T0 + timedelta(days=DAYS), channel=Channel.POWER, limit=1000)
    assert [r.value for r in got] == [float(i) for i in range(DAYS * 96)]

    again = await store.reorder(now)
    assert (again.reordered, again.left) == ((), 0)  # done once, never again
    later = await store.reorder(now + timedelta(days=10))
    assert len(later.reordered) == 2  # the rest once they are closed


async def test_budget_spent_leaves_the_rest_for_the_next_run(store: TimescaleStore) -> None:
    now = T0 + timedelta(days=30)
    first = await store.reorder(now, budget=0)  # no time at all: nothing is started
    assert (first.reordered, first.left) == ((), DAYS + 1)
    second = await store.reorder(now, budget=None)
    assert (len(second.reordered), second.left) == (DAYS + 1, 0)


async def test_a_chunk_held_by_a_reader_is_skipped_not_waited_for(store: TimescaleStore, timescale_dsn: str) -> None:
    """CLUSTER needs the chunk to itself; one that a long transaction reads is left for the
    next run after the lock timeout, and the others are done."""
    held = _chunks(timescale_dsn)[1][0]
    async with await psycopg.AsyncConnection.connect(timescale_dsn) as reader:
        await reader.execute(f"SELECT count(*) FROM {held}")  # the transaction stays open: the lock is kept
        result = await store.reorder(T0 + timedelta(days=30))
        assert result.busy == (held,)
        assert held not in result.reordered and len(result.reordered) == DAYS
        assert result.left == 1
        await reader.rollback()
    after = await store.reorder(T0 + timedelta(days=30))
    assert after.reordered == (held,)


async def test_one_gateway_at_a_time(store: TimescaleStore, timescale_dsn: str) -> None:
    """Another gateway's run (its advisory lock) makes this one leave the work to it."""
    async with await psycopg.AsyncConnection.connect(timescale_dsn, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s, %s)", policies._REORDER_LOCK)
        result = await store.reorder(T0 + timedelta(days=30))
        assert (result.reordered, result.left) == ((), DAYS + 1)
        await other.execute("SELECT pg_advisory_unlock(%s, %s)", policies._REORDER_LOCK)
    assert len((await store.reorder(T0 + timedelta(days=30))).reordered) == DAYS + 1


async def test_a_write_into_a_chunk_being_rewritten_waits_and_lands_once(
    store: TimescaleStore, timescale_dsn: str
) -> None:
    """A reader holds the oldest chunk, so CLUSTER queues for it; a batch for that chunk then
    queues behind CLUSTER. The reader lets go: the chunk is rewritten, then the batch lands,
    and every row is there once, the old ones unchanged."""
    oldest = _chunks(timescale_dsn)[0][0]
    before = _all(timescale_dsn)
    late = Batch(readings=[reading("M-9", Channel.POWER, minutes=15 * i + 7, value=1.0) for i in range(40)])

    def waiting(mode: str) -> bool:
        with psycopg.connect(timescale_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = %s"
                               " AND relation = to_regclass(%s)", [mode, oldest]).fetchone()  # fmt: skip
            return bool(row and row[0])

    async def until(mode: str) -> None:
        for _ in range(200):
            if waiting(mode):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"nobody waited for {mode} on {oldest}")

    async with await psycopg.AsyncConnection.connect(timescale_dsn) as reader:
        await reader.execute(f"SELECT count(*) FROM {oldest}")  # the transaction stays open
        rewrite = asyncio.create_task(store.reorder(T0 + timedelta(days=30)))
        await until("AccessExclusiveLock")
        write = asyncio.create_task(store.write(late))
        await until("RowExclusiveLock")  # the batch queues behind CLUSTER, not beside it
        await reader.rollback()
        result, written = await asyncio.gather(rewrite, write)
    assert oldest in result.reordered and result.left == 0
    assert written.readings_inserted == 40
    after = _all(timescale_dsn)
    assert [r for r in after if r[1] != "M-9"] == before
    assert sum(1 for r in after if r[1] == "M-9") == 40


async def test_plain_postgresql_and_sqlite_have_nothing_to_reorder(timescale_dsn: str, tmp_path: Path) -> None:
    async with await TimescaleStore.open(timescale_dsn, timescaledb=False) as plain:
        await plain.migrate()
        assert (await plain.reorder()).mode == "off"
    async with await SqliteStore.open(tmp_path / "s.db") as lite:
        await lite.migrate()
        assert (await lite.reorder()).mode == "off"


def test_community_mode_asks_timescaledb_for_a_reorder_policy() -> None:
    statements = policies.community_statements(None, timedelta(days=30))
    assert "SELECT add_reorder_policy('readings', 'readings_key', if_not_exists => true)" in statements


async def test_cli_reorders_now_within_its_budget(store: TimescaleStore, timescale_dsn: str, tmp_path: Path) -> None:
    """`meter-gateway db reorder` (for a cron job in a quiet hour): says what it did and what is left."""
    from typer.testing import CliRunner

    from gateway.cli import app as cli

    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[storage]\nbackend = "timescale"\ndsn = "{timescale_dsn}"\n')
    runner = CliRunner()

    none = await asyncio.to_thread(runner.invoke, cli, ["db", "reorder", "--config", str(config), "--budget", "0"])
    assert none.exit_code == 0, none.output
    assert "reordered 0 chunk(s)" in none.output and f"{DAYS + 1} closed chunk(s) still in arrival order" in none.output
    done = await asyncio.to_thread(runner.invoke, cli, ["db", "reorder", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert f"reordered {DAYS + 1} chunk(s): " in done.output and "0 closed chunk(s) still" in done.output
    assert all(clustered for _, clustered in _chunks(timescale_dsn))

    lite = tmp_path / "lite.toml"
    lite.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n')
    off = await asyncio.to_thread(runner.invoke, cli, ["db", "reorder", "--config", str(lite)])
    assert off.exit_code == 0 and "reorder: off" in off.output, off.output
