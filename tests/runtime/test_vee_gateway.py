"""VEE inside the running gateway (real pymodbus simulator, real SQLite store): the validator
is seeded from the store at start, so the first poll after a restart is judged against the
history of the run before, and gaps of interval data are estimated in the store.

(These tests start servers; they sit here because they test VEE's own wiring.)
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config.profiles import load_profiles
from gateway.model import Channel, Quality, Source, Status
from simulators.modbus import SimFleet
from storage.open import open_store
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

E = Channel.ENERGY_IMPORT
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


async def stored(path: Path) -> list:  # type: ignore[type-arg]
    store = await open_store("sqlite", sqlite_path=path)
    try:
        return await store.readings("M-0001", start=EPOCH, end=FAR, channel=E, limit=100_000)
    finally:
        await store.close()


async def test_first_poll_after_a_restart_is_checked_against_stored_history(tmp_path: Path) -> None:
    generic = load_profiles()["generic"]
    async with SimFleet(generic, 1, seed=3, speedup=600, update_interval=0.1) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, interval=0.3)
        db = cfg.data_path(cfg.storage.sqlite_path)
        async with running_gateway(cfg) as (gw, _):
            async def enough() -> bool:
                assert gw.store is not None
                rows = await gw.store.readings("M-0001", start=EPOCH, end=FAR, channel=E)
                return len(rows) >= 5

            await eventually(enough)
        before = await stored(db)
        last = max(r.ts for r in before)
        assert all(r.status is Status.VALID for r in before)

        fleet.meter("M-0001").fault = "regression"  # the register now reads 10 kWh low
        await asyncio.sleep(1.0)  # down for a few poll intervals, so polls are missing
        async with running_gateway(cfg) as (gw, _):
            async def after_restart() -> list:  # type: ignore[type-arg]
                assert gw.store is not None
                rows = await gw.store.readings("M-0001", start=last + timedelta(microseconds=1), end=FAR, channel=E)
                return rows

            rows = await eventually(after_restart)
        first = rows[0]
        assert first.quality & Quality.REGRESSION and first.status is Status.SUSPECT, first
        assert first.quality & Quality.GAP  # the downtime: polls that were never made


async def test_gaps_of_interval_data_are_estimated_in_the_store(tmp_path: Path) -> None:
    generic = load_profiles()["generic"]
    async with SimFleet(generic, 1, seed=4, speedup=600, update_interval=0.1) as fleet:
        # Sub-second polls are not interval data by default; here they are, to keep the test short.
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, interval=0.25,
                             vee={"estimate_min_interval": 0})
        async with running_gateway(cfg) as (gw, _):
            assert gw.store is not None

            async def polls(n: int) -> bool:
                assert gw.store is not None
                return len(await gw.store.readings("M-0001", start=EPOCH, end=FAR, channel=E)) >= n

            await eventually(lambda: polls(3))
            fleet.meter("M-0001").fault = "timeout"  # silent for a while
            await eventually(lambda: gw.pollers["sim"].health()["M-0001"].consecutive_failures >= 4)
            fleet.meter("M-0001").fault = None

            async def estimated() -> list:  # type: ignore[type-arg]
                assert gw.store is not None
                rows = await gw.store.readings("M-0001", start=EPOCH, end=FAR, channel=E)
                return [r for r in rows if r.source is Source.ESTIMATE]

            estimates = await eventually(estimated)
        assert all(r.status is Status.ESTIMATED and r.quality & Quality.ESTIMATED for r in estimates)
        rows = await stored(cfg.data_path(cfg.storage.sqlite_path))
        values = [r.value for r in rows]
        assert values == sorted(values)  # estimates sit between the real reads around them
