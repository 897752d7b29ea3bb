"""VEE across a meter's series inside the running gateway (issue 24), real pymodbus simulator, real
SQLite store:

- usage while disconnected (item 3): a simulated meter reports its supply relay open in its status
  word while its energy register still advances (a bypass): the readings are stored suspect with
  usage_while_disconnected, and one tamper event (critical) is raised per episode; a meter that is
  really off is not flagged;
- TOU sum check (item 2): a time-of-use meter whose tariff registers stop counting while its total
  goes on: its reads are stored suspect with tou_sum_check and one anomaly names both figures.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from gateway.config.profiles import load_profiles
from gateway.model import Channel, EventKind, Quality, Severity, Status
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

E, T1 = Channel.ENERGY_IMPORT, Channel.ENERGY_IMPORT_T1
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


async def test_a_bypassed_open_relay_flags_the_readings_and_raises_one_tamper_event_per_episode(
        tmp_path: Path) -> None:
    generic = load_profiles()["generic"]
    # speedup: one second of the test is ten minutes of the meter's, so energy moves between polls.
    async with SimFleet(generic, 2, seed=5, speedup=600, update_interval=0.1) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.25)
        async with running_gateway(cfg) as (gw, _):
            store = gw.store
            assert store is not None

            async def rows(meter: str) -> list:  # type: ignore[type-arg]
                return list(await store.readings(meter, start=EPOCH, end=FAR, channel=E, limit=100_000))

            async def tampers() -> list:  # type: ignore[type-arg]
                return [e for e in await store.events(kind=EventKind.TAMPER, limit=100) if e.meter_id == "M-0001"]

            async def count(meter: str, n: int, flag: Quality = Quality.NONE) -> bool:
                return sum(1 for r in await rows(meter) if r.quality & flag == flag) >= n

            await eventually(lambda: count("M-0001", 3))
            fleet.meter("M-0001").fault = "bypass"  # the relay reads open, the register keeps counting
            fleet.meter("M-0002").fault = "disconnected"  # really off: nothing consumed
            await eventually(lambda: count("M-0001", 3, Quality.USAGE_WHILE_DISCONNECTED))
            await eventually(lambda: count("M-0002", 6, Quality.RELAY_OPEN))
            fleet.meter("M-0001").fault = None  # relay closed again: the episode ends
            first = await rows("M-0001")
            await eventually(lambda: count("M-0001", len(first) + 3))
            fleet.meter("M-0001").fault = "bypass"  # a second episode
            before = sum(1 for r in await rows("M-0001") if r.quality & Quality.USAGE_WHILE_DISCONNECTED)
            await eventually(lambda: count("M-0001", before + 2, Quality.USAGE_WHILE_DISCONNECTED))
            events = await eventually(lambda: _at_least(tampers, 2))
            readings = await rows("M-0001")
            off = await rows("M-0002")


        flagged = [r for r in readings if r.quality & Quality.USAGE_WHILE_DISCONNECTED]
        assert all(r.status is Status.SUSPECT and r.quality & Quality.RELAY_OPEN for r in flagged)
        # The first read with the relay open is each episode's baseline: never flagged itself.
        opened = [r for r in readings if r.quality & Quality.RELAY_OPEN]
        assert opened[0] not in flagged
        assert not any(r.quality & Quality.USAGE_WHILE_DISCONNECTED for r in readings
                       if not r.quality & Quality.RELAY_OPEN)
        assert len(events) == 2 and all(e.severity is Severity.CRITICAL for e in events), events
        assert all("usage_while_disconnected" in e.detail and "relay open" in e.detail for e in events)
        assert not any(r.quality & Quality.USAGE_WHILE_DISCONNECTED for r in off)
        assert any(r.quality & Quality.RELAY_OPEN and r.status is Status.VALID for r in off)


async def _at_least(probe, n: int) -> list | None:  # type: ignore[no-untyped-def, type-arg]
    found = await probe()
    return found if len(found) >= n else None


async def test_tou_registers_that_stop_adding_up_to_the_total_are_flagged(tmp_path: Path) -> None:
    tou = load_profiles()["generic_tou"]
    async with SimFleet(tou, 2, seed=6, speedup=600, update_interval=0.1) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.25, profile="generic_tou")
        async with running_gateway(cfg) as (gw, _):
            store = gw.store
            assert store is not None

            async def rows(meter: str, channel: Channel = E) -> list:  # type: ignore[type-arg]
                return list(await store.readings(meter, start=EPOCH, end=FAR, channel=channel, limit=100_000))

            async def flagged(meter: str, n: int) -> bool:
                return sum(1 for r in await rows(meter) if r.quality & Quality.TOU_SUM_CHECK) >= n

            async def anomalies() -> list:  # type: ignore[type-arg]
                return [e for e in await store.events(kind=EventKind.ANOMALY, limit=100) if "tou_sum_check" in e.detail]

            await eventually(lambda: _at_least(lambda: rows("M-0001"), 4))
            fleet.meter("M-0001").fault = "tou_stuck"  # the tariffs stop, the total goes on
            await eventually(lambda: flagged("M-0001", 3))
            events = await eventually(lambda: _at_least(anomalies, 1))
            await eventually(lambda: _at_least(lambda: rows("M-0002"), 8))
            total, tariff = await rows("M-0001"), await rows("M-0001", T1)
            healthy = await rows("M-0002") + await rows("M-0002", T1)

        bad = [r for r in total + tariff if r.quality & Quality.TOU_SUM_CHECK]
        assert bad and all(r.status is Status.SUSPECT for r in bad)
        assert {r.ts for r in bad if r.channel is E} == {r.ts for r in bad if r.channel is T1}  # the whole read
        assert not any(r.quality & Quality.TOU_SUM_CHECK for r in total[:4])  # before the fault
        assert not any(r.quality & Quality.TOU_SUM_CHECK for r in healthy)
        assert len(events) == 1 and events[0].meter_id == "M-0001", events  # one per episode
        figures = re.search(r"tariff registers advanced ([0-9.e-]+), the total ([0-9.e-]+)", events[0].detail)
        assert figures is not None, events[0].detail
        assert float(figures[1]) < float(figures[2])  # both figures: the tariffs fell behind the total
