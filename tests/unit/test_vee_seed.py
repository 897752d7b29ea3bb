"""Per-meter VEE state survives a restart: it is rebuilt from the store (cumulative history,
last values, stored inspections), so the first readings after a restart are judged exactly as
if the gateway had never stopped."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from gateway.model import Batch, EventKind, Kind, Quality, Reading, Source
from gateway.validate.validator import Validator
from simulators.dataset import generate
from storage.base import Store
from storage.open import open_store
from tests.unit.test_checks import STEP, T0, E, cumulative, household


async def _store(path: Path) -> Store:
    store = await open_store("sqlite", sqlite_path=path)
    await store.migrate()
    return store


async def restarted(store: Store, **kwargs: object) -> Validator:
    """A fresh Validator seeded the way Gateway._keep_store seeds it."""
    validator = Validator(**kwargs)  # type: ignore[arg-type]
    validator.seed_history(await store.cumulative_history(since=T0 - timedelta(days=30)))
    validator.seed((h.meter_id, h.channel, h.ts, h.value) for h in await store.last_cumulative())
    validator.seed_inspections(await store.events(kind=EventKind.INSPECTION_RECOMMENDED, limit=10_000))
    return validator


async def test_after_a_restart_every_flag_is_what_it_would_have_been(tmp_path: Path) -> None:
    ds = generate(electricity=12, water=4, days=8, seed=7)
    kwargs = {"moduli": ds.moduli, "intervals": ds.intervals, "utilities": ds.utilities,
              "bidirectional": ds.bidirectional}
    cut = 6 * 96  # the gateway stops after six days
    continuous = Validator(**kwargs)  # type: ignore[arg-type]
    store = await _store(tmp_path / "store.db")
    try:
        for batch in ds.batches[:cut]:
            out, events = continuous.validate(batch)
            # NaN cannot be stored: in the pipeline the normaliser makes it a dead letter first.
            await store.write(Batch(readings=[r for r in out if math.isfinite(r.value)], events=events))
        again = await restarted(store, **kwargs)
        expected: list[tuple[object, ...]] = []
        got: list[tuple[object, ...]] = []
        for batch in ds.batches[cut:]:
            o, e = continuous.validate(batch)
            expected += [(r.meter_id, r.channel, r.ts, r.quality, r.status, r.value) for r in o]
            expected += [(ev.meter_id, ev.kind, ev.ts, ev.detail) for ev in e]
            o, e = again.validate(batch)
            got += [(r.meter_id, r.channel, r.ts, r.quality, r.status, r.value) for r in o]
            got += [(ev.meter_id, ev.kind, ev.ts, ev.detail) for ev in e]
        assert len(got) > 10_000
        assert got == expected
        # The stretch after the restart has spikes, flat runs and estimates to get right.
        flags = Quality.NONE
        for row in got:
            if isinstance(row[3], Quality):
                flags |= row[3]
        assert flags & Quality.SPIKE and flags & Quality.FLATLINE and flags & Quality.ESTIMATED
    finally:
        await store.close()


async def test_the_first_read_after_a_restart_is_checked_against_history(tmp_path: Path) -> None:
    values = household(3)
    readings = cumulative(values)
    store = await _store(tmp_path / "store.db")
    try:
        before = Validator(intervals={"M-1": 900})
        for r in readings[:200]:
            out, _ = before.validate([r])
            await store.write(Batch(readings=out))
        after = await restarted(store, intervals={"M-1": 900})
        # Down for two hours; the meter then reads 3 kWh low.
        first = Reading("M-1", E, readings[208].ts, values[199] - 3.0, Kind.CUMULATIVE,
                        received_at=readings[208].received_at)
        out, _ = after.validate([first])
        assert out[0].quality.names() == ["regression", "gap"]
        assert not [r for r in out if r.source is Source.ESTIMATE]  # the read closing the gap is bad
        out, _ = after.validate([readings[209]])  # measured against the last good read, from before
        assert [r.quality for r in out] == [Quality.NONE]
    finally:
        await store.close()


async def test_a_gap_across_the_downtime_is_estimated_from_the_stored_profile(tmp_path: Path) -> None:
    values = household(8, seed=9)
    readings = cumulative(values)
    store = await _store(tmp_path / "store.db")
    try:
        before = Validator(intervals={"M-1": 900})
        for r in readings[:7 * 96 + 60]:
            out, _ = before.validate([r])
            await store.write(Batch(readings=out))
        after = await restarted(store, intervals={"M-1": 900})
        out, _ = after.validate([readings[7 * 96 + 90]])  # down 7.5 hours
        estimates = [r for r in out if r.source is Source.ESTIMATE]
        assert [r.ts for r in estimates] == [T0 + k * STEP for k in range(7 * 96 + 60, 7 * 96 + 90)]
        assert {(r.note or "").split()[0] for r in estimates} == {"estimate=like_day"}
    finally:
        await store.close()


async def test_an_inspection_is_not_recommended_twice_across_a_restart(tmp_path: Path) -> None:
    values = [float(i) for i in range(60)]
    for i in (5, 15, 25, 45):
        values[i] -= 5.0
    readings = cumulative(values)
    store = await _store(tmp_path / "store.db")
    try:
        before = Validator(intervals={"M-1": 900})
        raised = []
        for r in readings[:30]:
            out, events = before.validate([r])
            raised += [e.kind for e in events]
            await store.write(Batch(readings=out, events=events))
        assert raised.count(EventKind.INSPECTION_RECOMMENDED) == 1
        after = await restarted(store, intervals={"M-1": 900})
        later = []
        for r in readings[30:]:
            _, events = after.validate([r])
            later += [e.kind for e in events]
        assert EventKind.INSPECTION_RECOMMENDED not in later and EventKind.ANOMALY in later
    finally:
        await store.close()
