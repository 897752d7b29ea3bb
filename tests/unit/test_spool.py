"""The spool keeps what it accepted across a reopen, in order, and holds producers when full."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    DeadLetter,
    Event,
    EventKind,
    Kind,
    Quality,
    Reading,
    Relay,
    Severity,
    Status,
)
from storage.spool import Spool, SpoolStats
from storage.spool.codec import decode, encode
from tests.fixtures.gateway import eventually

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def batch(i: int) -> Batch:
    return Batch(readings=[Reading("M-1", Channel.ENERGY_IMPORT, T.replace(minute=i), float(i), Kind.CUMULATIVE,
                                   quality=Quality.ROLLOVER, status=Status.VALID, received_at=T)])


def test_codec_round_trip() -> None:
    b = Batch(
        readings=batch(1).readings,
        balances=[BalanceUpdate("P-1", T, Decimal("10.10"), "KES", emergency_credit=Decimal("5"), debt=Decimal("0.01"),
                                relay=Relay.CONNECTED, last_topup_amount=Decimal("100"), last_topup_ts=T, low_credit=False,
                                received_at=T)],
        events=[Event(T, "M-1", EventKind.ANOMALY, Severity.WARNING, "x")],
        deadletters=[DeadLetter(T, "mqtt", "payg/P-1/balance", "malformed_json", "bad", "{", "P-1")],
    )
    assert decode(encode(b)) == b


async def test_survives_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        for i in range(5):
            await spool.append(batch(i))
    async with Spool(path) as spool:
        assert spool.stats().rows == 5
        got = await spool.peek(3)
        assert [b.readings[0].value for _, b in got] == [0.0, 1.0, 2.0]
        await spool.delete_upto(got[-1][0])
    async with Spool(path) as spool:
        got = await spool.peek(100)
        assert [b.readings[0].value for _, b in got] == [3.0, 4.0]


async def test_full_spool_holds_producer_until_drained(tmp_path: Path) -> None:
    warnings: list[SpoolStats] = []
    size = len(encode(batch(0)))
    async with Spool(tmp_path / "s.db", max_bytes=size * 3, on_high_water=warnings.append) as spool:
        for i in range(3):
            await spool.append(batch(i))
        assert len(warnings) == 1  # crossed 80 % once
        # The warning travels in the spool with the batch that crossed the line.
        [(_, crossing)] = await spool.peek(100) and (await spool.peek(100))[2:]
        assert [e.kind for e in crossing.events] == [EventKind.SPOOL_HIGH]
        blocked = asyncio.create_task(spool.append(batch(3)))
        await asyncio.sleep(0.2)
        assert not blocked.done()  # back-pressure: waiting, not dropped
        assert spool.stats().full and spool.stats().held == 1
        got = await spool.peek(2)
        await spool.delete_upto(got[-1][0])
        await asyncio.wait_for(blocked, 5)
        assert [b.readings[0].value for _, b in await spool.peek(100)] == [2.0, 3.0]
        assert not spool.stats().full


async def _peek_traced(spool: Spool, max_items: int) -> tuple[list[tuple[int, Batch]], list[str]]:
    """peek, and the SQL statements it ran on the spool file."""
    traced: list[str] = []
    await spool.db.set_trace_callback(traced.append)
    try:
        return await spool.peek(max_items), traced
    finally:
        await spool.db.set_trace_callback(None)  # type: ignore[arg-type]  # None unsets it


async def test_peek_hands_out_what_this_process_appended_without_reading_it_back(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        appended = [batch(i) for i in range(4)]
        for b in appended:
            await spool.append(b)
        appended[0].readings.clear()  # the producer may go on using its batch

        got, sql = await _peek_traced(spool, 3)

        assert sql == []
        assert [b for _, b in got] == [batch(0), batch(1), batch(2)]
        await spool.delete_upto(got[1][0])
        got, sql = await _peek_traced(spool, 100)
        assert sql == [] and [b for _, b in got] == [batch(2), batch(3)]
        # What the file holds decodes to the same batches (the path after a restart).
        async with spool.db.execute("SELECT body FROM spool ORDER BY id") as cur:
            assert [decode(row[0]) async for row in cur] == [b for _, b in got]


async def test_past_its_memory_the_spool_reads_the_file_until_it_is_empty(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db", memory_bytes=len(encode(batch(0))) * 2) as spool:
        for i in range(3):  # the third does not fit: from here on peek reads the file
            await spool.append(batch(i))
        got, sql = await _peek_traced(spool, 100)
        assert [b for _, b in got] == [batch(0), batch(1), batch(2)]
        assert any(s.startswith("SELECT id, body") for s in sql)
        await spool.append(batch(3))  # appended while reading from the file: read from the file too
        await spool.delete_upto(got[-1][0])
        got, sql = await _peek_traced(spool, 100)
        assert [b for _, b in got] == [batch(3)] and sql
        await spool.delete_upto(got[-1][0])

        await spool.append(batch(4))  # empty again: memory again
        got, sql = await _peek_traced(spool, 100)

        assert [b for _, b in got] == [batch(4)] and sql == []


async def test_after_a_restart_peek_reads_what_was_spooled_before_then_memory_again(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        await spool.append(batch(0))
    async with Spool(path) as spool:
        await spool.append(batch(1))
        got, sql = await _peek_traced(spool, 100)
        assert [b for _, b in got] == [batch(0), batch(1)] and sql
        await spool.delete_upto(got[-1][0])
        await spool.append(batch(2))

        got, sql = await _peek_traced(spool, 100)

        assert [b for _, b in got] == [batch(2)] and sql == []


async def _file_ids(spool: Spool) -> list[int]:
    async with spool.db.execute("SELECT id FROM spool ORDER BY id") as cur:
        return [int(row[0]) async for row in cur]


async def test_a_delete_cancelled_after_it_committed_never_hands_those_batches_out_again(tmp_path: Path) -> None:
    """The forwarder is cancelled at shutdown, then drains: what was deleted must not be sent again."""
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        for i in range(3):
            await spool.append(batch(i))
        chunk = await spool.peek(100)
        deleting = asyncio.create_task(spool.delete_upto(chunk[-1][0]))
        other = sqlite3.connect(path)
        try:
            # Until another connection sees the DELETE committed; then the delete is still waiting
            # for its last statement (sleep(0): it must not get the loop's turn to finish).
            for _ in range(1_000_000):
                if other.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0:
                    break
                await asyncio.sleep(0)
        finally:
            other.close()
        assert not deleting.done()
        deleting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deleting

        assert await _file_ids(spool) == []
        assert await spool.peek(100) == []


async def test_a_delete_cancelled_after_it_committed_still_counts_what_it_deleted(tmp_path: Path) -> None:
    """Issue 26: the forwarder's delete runs beside the next write and is cancelled at shutdown. Counts
    left at what the file no longer holds kept `rows` above 0 for ever: the drain then ran to its deadline."""
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        for i in range(3):
            await spool.append(batch(i))
        chunk = await spool.peek(100)
        deleting = asyncio.create_task(spool.delete_upto(chunk[-1][0]))
        other = sqlite3.connect(path)
        try:
            for _ in range(1_000_000):  # until another connection sees the DELETE committed
                if other.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0:
                    break
                await asyncio.sleep(0)
        finally:
            other.close()
        deleting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deleting

        stats = await eventually(lambda: (s := spool.stats()).rows == 0 and s, timeout=10)
        assert (stats.rows, stats.items, stats.bytes, stats.oldest_age_s) == (0, 0, 0, None)
        assert await _file_ids(spool) == []


async def test_an_append_cancelled_while_its_insert_runs_is_still_handed_out(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.append(batch(0))
        appending = asyncio.create_task(spool.append(batch(1)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # its INSERT is queued: aiosqlite runs it whatever becomes of the caller
        appending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await appending
        await spool.append(batch(2))

        got = await spool.peek(100)

        assert [i for i, _ in got] == await _file_ids(spool)
        assert [b for _, b in got] == [batch(0), batch(1), batch(2)]
