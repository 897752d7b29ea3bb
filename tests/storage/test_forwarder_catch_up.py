"""Issue 26 item 2: a forwarder that is behind catches up with bigger writes, and the spool delete of
one write, which runs while the next write goes to the store, never lets a batch go to the store twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.model import Batch
from storage.base import Store
from storage.records import WriteResult
from storage.spool import Spool
from storage.spool.forwarder import Forwarder
from tests.fixtures.gateway import eventually
from tests.storage.samples import reading


class Recording:
    """The store, recording the readings of each write (meter, minute) and the store's answers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[list[tuple[str, float]]] = []
        self.results: list[WriteResult] = []

    async def write(self, batch: Batch) -> WriteResult:
        self.writes.append([(r.meter_id, r.ts.timestamp()) for r in batch.readings])
        result = await self.store.write(batch)
        self.results.append(result)
        return result


def batch_of(meter: str, n: int) -> Batch:
    return Batch(readings=[reading(meter, minutes=m) for m in range(n)])


async def test_a_forwarder_that_is_behind_writes_up_to_catch_up_batches_at_once(store: Store, tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        for k in range(10):
            await spool.append(batch_of(f"M-{k}", 100))
        recording = Recording(store)
        forwarder = Forwarder(spool, recording, batch_items=100, catch_up=4)  # type: ignore[arg-type]
        await forwarder.forward_once()
        # 1,000 waiting: four batches' worth in one write, where a forwarder at its idle size took 100.
        assert [len(w) for w in recording.writes] == [400]
        while spool.stats().rows:
            await forwarder.forward_once()
        # 600 were left: more than a batch, so again as much as catching up allows, then the rest.
        assert [len(w) for w in recording.writes] == [400, 400, 200]
    assert sum(r.readings_inserted for r in recording.results) == 1000


async def test_a_forwarder_that_keeps_up_writes_batches_of_its_size(store: Store, tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.append(batch_of("M-1", 60))
        await spool.append(batch_of("M-2", 60))
        recording = Recording(store)
        forwarder = Forwarder(spool, recording, batch_items=100, catch_up=4)  # type: ignore[arg-type]
        while spool.stats().rows:
            await forwarder.forward_once()
        # 120 waiting is more than a batch: one write takes both (a batch is never split).
        assert [len(w) for w in recording.writes] == [120]


async def test_while_it_runs_every_spooled_reading_reaches_the_store_once(store: Store, tmp_path: Path) -> None:
    """The forwarder's run: each write's spool delete overlaps the next write, whose batches come
    after those committed; no reading is written twice, none is left behind."""
    async with Spool(tmp_path / "spool.db") as spool:
        recording = Recording(store)
        forwarder = Forwarder(spool, recording, batch_items=50, linger=0.0)  # type: ignore[arg-type]
        running = asyncio.create_task(forwarder.run())
        try:
            for k in range(60):
                await spool.append(batch_of(f"M-{k:02d}", 7))
                if k % 5 == 0:
                    await asyncio.sleep(0)  # let the forwarder take what is there, mid-stream
            await eventually(lambda: spool.stats().rows == 0)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    written = [key for w in recording.writes for key in w]
    assert len(written) == len(set(written)) == 60 * 7
    assert sum(r.readings_inserted for r in recording.results) == 60 * 7
    assert sum(r.readings_duplicate for r in recording.results) == 0
