"""The spool when its file fails it, on real files: a row that does not decode, a damaged page, a
destroyed header, the file removed or replaced while open, a full disk (a real tmpfs), and the
modes of the files it makes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.model import Batch, Channel, Event, EventKind, Kind, Reading, Severity
from storage.spool import Spool
from storage.spool.codec import decode, encode
from storage.spool.forwarder import Forwarder
from storage.spool.salvage import check
from storage.sqlite.store import SqliteStore
from tests.fixtures.tmpfs import fill, mounted_tmpfs

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def batch(i: int, meter_id: str = "M-1") -> Batch:
    return Batch(readings=[Reading(meter_id, Channel.ENERGY_IMPORT, T0 + timedelta(minutes=i), float(i),
                                   Kind.CUMULATIVE, received_at=T0)])


def values(got: list[tuple[int, Batch]]) -> list[float]:
    return [r.value for _, b in got for r in b.readings]


async def spool_of(path: Path, n: int) -> None:
    """A closed spool file at `path` holding batches 0..n-1 (ids 1..n), checkpointed (no -wal); the rows
    as `append` writes them, in one transaction (n commits with fsync would take seconds)."""
    async with Spool(path):
        pass
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.executemany("INSERT INTO spool (body, items, size, created) VALUES (?, 1, ?, ?)",
                        [(body, len(body), T0.timestamp() + i) for i in range(n) for body in [encode(batch(i))]])


async def everything(spool: Spool) -> list[tuple[int, Batch]]:
    """Every batch in the spool's file, in order (peek returns at most 1000)."""
    async with spool.db.execute("SELECT id, body FROM spool ORDER BY id") as cur:
        got = [(int(row_id), decode(body)) async for row_id, body in cur]
    assert len(got) == spool.stats().rows
    return got


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "4m") as where:
        yield where


# -- a row that does not decode ---------------------------------------------------------------

async def test_an_undecodable_row_becomes_a_dead_letter_with_its_id_and_bytes_and_the_rest_drains(
        tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    await spool_of(path, 5)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE spool SET body = ? WHERE id = 2", (b'{"r": [["M-1", "energy_im\xff\x00',))
        raw.execute("UPDATE spool SET body = CAST(x'7b22ff' AS TEXT) WHERE id = 4")  # text, not even UTF-8
    raw.close()
    async with await SqliteStore.open(tmp_path / "store.db") as store, Spool(path) as spool:
        await store.migrate()
        forwarder = Forwarder(spool, store)

        assert await forwarder.drain(asyncio.get_running_loop().time() + 30)

        stored = await store.readings("M-1", start=T0, end=T0 + timedelta(hours=1))
        dead = await store.deadletters(limit=10)
    assert [r.value for r in stored] == [0.0, 2.0, 4.0]
    by_where = {d.where: d for d in dead}
    assert sorted(by_where) == ["spool row 2", "spool row 4"]
    assert {d.reason for d in dead} == {"spool_undecodable"} and {d.source for d in dead} == {"spool"}
    assert by_where["spool row 2"].payload == '{"r": [["M-1", "energy_im\\xff\\x00'
    assert by_where["spool row 4"].payload == '{"\\xff'
    assert "spool row 2 could not be decoded" in by_where["spool row 2"].detail


# -- damaged at open ----------------------------------------------------------------------------

async def test_a_damaged_page_costs_only_its_batches_and_the_spool_opens(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    await spool_of(path, 2000)
    pages = path.stat().st_size // 4096
    with path.open("r+b") as f:  # one page in the middle: a leaf of the spool table
        f.seek(pages // 2 * 4096)
        f.write(random.Random(7).randbytes(4096))
    events: list[Event] = []

    async with Spool(path, on_event=events.append) as spool:
        got = await everything(spool)

    recovered = values(got)
    lost = 2000 - len(recovered)
    assert 0 < lost <= 100, lost  # a page holds a few dozen batches
    assert recovered == sorted(recovered) and set(recovered) < {float(i) for i in range(2000)}
    [salvaged] = [e for e in events if e.kind is EventKind.SPOOL_SALVAGED]
    assert salvaged.severity is Severity.CRITICAL
    assert f"recovered {len(recovered)} batches ({len(recovered)} items)" in salvaged.detail
    assert f"lost {lost} batches (ids " in salvaged.detail
    kept = [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(kept) == 1 and kept[0] in salvaged.detail
    # The event is in the spool itself, after the recovered batches: it reaches the store like data.
    async with Spool(path) as spool:
        got = await everything(spool)
    assert [e.kind for _, b in got for e in b.events] == [EventKind.SPOOL_SALVAGED]
    assert check(path).healthy


async def test_a_destroyed_header_is_rebuilt_and_every_batch_recovered(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    await spool_of(path, 2000)
    with path.open("r+b") as f:
        f.write(bytes(100))
    before = check(path)
    assert before.problem == "file is not a database" and before.header_damaged
    assert before.tally.readable == 2000 and before.tally.lost == 0

    events: list[Event] = []
    async with Spool(path, on_event=events.append) as spool:
        got = await everything(spool)
        await spool.append(batch(2000))  # ids go on after the damaged spool's
        assert max(i for i, _ in await everything(spool)) == 2002

    assert values(got) == [float(i) for i in range(2000)]
    [salvaged] = [e for e in events if e.kind is EventKind.SPOOL_SALVAGED]
    assert salvaged.severity is Severity.WARNING
    assert "recovered 2000 batches (2000 items)" in salvaged.detail and "lost 0 batches" in salvaged.detail
    assert "header was rebuilt" in salvaged.detail


async def test_a_spool_that_is_not_a_database_at_all_opens_empty_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a spool\n" * 300)
    async with Spool(path) as spool:
        assert [e.kind for _, b in await spool.peek(100) for e in b.events] == [EventKind.SPOOL_SALVAGED]
    [kept] = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert kept.read_bytes() == b"this is not a spool\n" * 300


# -- removed or replaced while open -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["main file removed", "all files removed", "replaced"])
async def test_a_spool_file_removed_or_replaced_while_open_is_noticed_and_nothing_is_lost(
        tmp_path: Path, how: str) -> None:
    path = tmp_path / "spool.db"
    other = tmp_path / "other.db"
    await spool_of(other, 3)
    events: list[Event] = []
    async with Spool(path, on_event=events.append) as spool:
        for i in range(30):
            await spool.append(batch(i))
        await spool.delete_upto(10)  # the forwarder has stored the first ten
        assert not await spool.check_file()  # nothing happened: nothing done
        if how == "replaced":
            other.replace(path)
        else:
            for suffix in ("", "-wal", "-shm") if how == "all files removed" else ("",):
                path.with_name(path.name + suffix).unlink()

        assert await spool.check_file()

        [replaced] = [e for e in events if e.kind is EventKind.SPOOL_REPLACED]
        assert "20 batches (20 items) waiting in the open file were copied into a fresh spool" in replaced.detail
        assert values(await spool.peek(1000))[:20] == [float(i) for i in range(10, 30)]
        await spool.append(batch(30))
        await spool.delete_upto(12)  # what the forwarder held before is the same in the new file
    async with Spool(path) as spool:  # a restart (or a crash) finds everything in the file at the path
        got = await everything(spool)
    assert values(got) == [float(i) for i in range(12, 31)]
    assert [i for i, b in got if b.readings][-1] > 30  # ids go on after the old file's
    assert [e.kind for _, b in got for e in b.events] == [EventKind.SPOOL_REPLACED]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if how == "replaced":
        [kept] = [p for p in tmp_path.iterdir() if ".replaced-" in p.name and p.name.endswith("Z")]
        assert f"kept as {kept.name}" in replaced.detail
        assert check(kept).tally.readable == 3  # the file that took its place, untouched


async def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db"):
        with pytest.raises(SpoolError, match="in use by another process"):
            async with Spool(tmp_path / "spool.db"):
                pass
    async with Spool(tmp_path / "spool.db"):  # released at close
        pass


# -- full disk --------------------------------------------------------------------------------

async def test_a_full_disk_holds_the_append_until_space_returns_and_the_events_are_stored(tmpfs: Path) -> None:
    events: list[Event] = []
    async with Spool(tmpfs / "spool.db", on_event=events.append) as spool:
        await spool.append(batch(0))
        filler = fill(tmpfs)
        appends = [asyncio.create_task(spool.append(batch(i))) for i in range(1, 200)]
        await asyncio.sleep(0.5)
        assert not all(a.done() for a in appends)
        assert spool.stats().blocked == "disk full" and spool.stats().write_failures >= 1
        assert [e.kind for e in events] == [EventKind.SPOOL_BLOCKED]
        for a in appends:
            if a.done():
                a.result()  # those that fitted committed; none failed

        filler.unlink()
        await asyncio.wait_for(asyncio.gather(*appends), 30)

        assert spool.stats().blocked is None
        got = await everything(spool)
    assert sorted(values(got)) == [float(i) for i in range(200)]
    stored = [e for _, b in got for e in b.events]
    assert [e.kind for e in stored] == [EventKind.SPOOL_BLOCKED, EventKind.SPOOL_RESUMED]
    assert stored[0] == events[0]  # with the time it began
    assert "disk full" in stored[0].detail and "intake resumed" in stored[1].detail


async def test_events_that_waited_for_space_are_stored_without_intake_once_it_returns(tmpfs: Path) -> None:
    """No producer retries here: the periodic watch is what finds the disk writable again."""
    fillers: list[Path] = []

    def disk_fills_now(event: Event) -> None:
        if event.kind is EventKind.SPOOL_REPLACED:
            fillers.append(fill(tmpfs))

    async with Spool(tmpfs / "spool.db", on_event=disk_fills_now) as spool:
        await spool.append(batch(0))
        (tmpfs / "spool.db").unlink()
        assert await spool.check_file()  # its event cannot be stored: the disk filled just then
        assert spool.stats().blocked == "disk full"
        watch = asyncio.create_task(spool.watch(0.05))
        try:
            fillers[0].unlink()
            for _ in range(200):
                if spool.stats().blocked is None:
                    break
                await asyncio.sleep(0.05)
            assert spool.stats().blocked is None
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        got = await everything(spool)
    assert [e.kind for _, b in got for e in b.events] == [EventKind.SPOOL_REPLACED, EventKind.SPOOL_BLOCKED,
                                                           EventKind.SPOOL_RESUMED]


async def test_a_spool_delete_on_a_full_disk_waits_and_the_forwarder_goes_on_after(tmp_path: Path,
                                                                                tmpfs: Path) -> None:
    """The store is elsewhere and takes the batches; deleting them from the spool needs the full disk."""
    async with await SqliteStore.open(tmp_path / "store.db") as store, Spool(tmpfs / "spool.db") as spool:
        await store.migrate()
        for i in range(300):
            await spool.append(batch(i))
        filler = fill(tmpfs)
        forwarder = Forwarder(spool, store, batch_items=50)
        task = asyncio.create_task(forwarder.run())
        try:
            for _ in range(300):
                if spool.stats().blocked:
                    break
                await asyncio.sleep(0.05)
            assert spool.stats().blocked == "disk full"
            assert not task.done()
            filler.unlink()
            # The spool stores its blocked/resumed events after the delete that finds the disk writable
            # again, and the forwarder then takes them: wait for both, not for the first empty spool.
            for _ in range(600):
                if not spool.stats().rows and len(await store.events(limit=10)) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert spool.stats().rows == 0 and not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        stored = await store.readings("M-1", start=T0, end=T0 + timedelta(days=1))
        kinds = [e.kind for e in await store.events(limit=10)]
    assert [r.value for r in stored] == [float(i) for i in range(300)]
    assert sorted(kinds) == [EventKind.SPOOL_BLOCKED, EventKind.SPOOL_RESUMED]


async def test_the_sqlite_store_on_a_full_disk_is_unavailable_never_refused(tmpfs: Path) -> None:
    """Unavailable: the forwarder keeps the batch and tries again. Refused would dead-letter good rows."""
    from gateway.errors import SinkError, SinkUnavailable

    async with await SqliteStore.open(tmpfs / "store.db") as store:
        await store.migrate()
        filler = fill(tmpfs)
        big = Batch(readings=[r for i in range(2000) for r in batch(i).readings])
        with pytest.raises(SinkError) as refused:
            for _ in range(50):  # until the WAL's slack is used up
                await store.write(big)
                big = Batch(readings=[Reading("M-2", r.channel, r.ts + timedelta(days=1), r.value, r.kind,
                                              received_at=T0) for r in big.readings])
        assert isinstance(refused.value, SinkUnavailable), refused.value
        filler.unlink()
        result = await store.write(big)
    assert result.readings_inserted == 2000


# -- private files ----------------------------------------------------------------------------

async def test_spool_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        async with Spool(tmp_path / "data" / "spool.db") as spool:
            await spool.append(batch(0))
            names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data").iterdir()}
    finally:
        os.umask(old)
    assert names == {"spool.db": 0o600, "spool.db-wal": 0o600, "spool.db-shm": 0o600, "spool.db.lock": 0o600}
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
