"""Simulator faults through the real chain: poller over TCP -> normaliser -> validator.

Every fault ends as flagged data, a dead letter or a typed failure; none crashes the driver.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget
from gateway.model import Batch, Channel, EventKind, Quality, Status
from gateway.normalise.normaliser import Normaliser
from gateway.validate.validator import Validator
from simulators.modbus import SimFleet
from tests.fixtures.modbus import Collected, MakeFleet


class Chain:
    """poll_now -> normalise -> validate, for one fleet."""

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet
        targets = [PollTarget(m.meter_id, u, fleet.profile, 60.0) for u, m in fleet.meters.items()]
        self.poller = ModbusPoller(ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.3, retries=0),
                                   targets, Collected())
        profiles = {t.meter_id: fleet.profile for t in targets}
        self.normaliser = Normaliser(profiles, {})
        self.validator = Validator({(t.meter_id, r.channel): r.modulus for t in targets
                                    for r in fleet.profile.registers if r.modulus})
        self.polls = 0

    async def poll(self, meter_id: str = "M-0001") -> Batch:
        self.fleet.tick(self.fleet.sim_now() + timedelta(hours=self.polls))  # an hour of consumption per poll
        self.polls += 1
        raw = await self.poller.poll_now(meter_id)
        batch = self.normaliser.registers(raw)
        batch.readings, events = self.validator.validate(batch.readings)
        batch.events.extend(events)
        return batch

    @staticmethod
    def reading(batch: Batch, channel: Channel) -> tuple[float, Quality, Status]:
        r = next(r for r in batch.readings if r.channel is channel)
        return r.value, r.quality, r.status


@pytest.fixture
async def chain(make_modbus_fleet: MakeFleet) -> Chain:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    return Chain(fleet)


async def test_regression_is_flagged_suspect(chain: Chain) -> None:
    await chain.poll()
    chain.fleet.set_fault("M-0001", "regression", regression_kwh=50.0)
    _, quality, status = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)
    assert quality & Quality.REGRESSION and status is Status.SUSPECT


async def test_rollover_at_the_modulus_is_counted_not_a_regression(chain: Chain) -> None:
    chain.fleet.set_fault("M-0001", "rollover")
    top, quality, _ = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)
    assert top == pytest.approx(1e8, rel=1e-6) and quality == Quality.NONE
    wrapped, quality, status = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)
    assert wrapped < 100 and quality == Quality.ROLLOVER and status is Status.VALID


async def test_tamper_bit_marks_the_poll_and_raises_an_event(chain: Chain) -> None:
    chain.fleet.set_fault("M-0001", "tamper")
    batch = await chain.poll()
    assert batch.readings and all(r.quality & Quality.TAMPER and r.status is Status.SUSPECT for r in batch.readings)
    assert [e.kind for e in batch.events].count(EventKind.TAMPER) == 1


async def test_garbage_nan_is_dead_lettered_and_impossible_values_rejected(chain: Chain) -> None:
    chain.fleet.set_fault("M-0001", "garbage")  # 0xFFFF words: NaN
    batch = await chain.poll()
    assert not batch.readings and {d.reason for d in batch.deadletters} == {"non_finite"}
    chain.fleet.set_fault("M-0001", "garbage", garbage_word=0x7F7F)  # 3.4e38: finite but beyond any meter's physics
    batch = await chain.poll()
    assert not batch.readings and {d.reason for d in batch.deadletters} == {"implausible_value"}
    assert [d.detail for d in batch.deadletters if "voltage_l1" in d.detail] == [
        "voltage_l1 at input 0x0006: 3.39615e+38 V is outside the physical range of voltage_l1, -2e+06..2e+06 V "
        "([plausibility.channels] voltage_l1)"]
    chain.fleet.set_fault("M-0001", "garbage", garbage_word=0x4396)  # 300.5 V: a voltage, but out of range for VEE
    batch = await chain.poll()
    _, quality, status = chain.reading(batch, Channel.VOLTAGE_L1)
    assert quality & Quality.OUT_OF_RANGE and status is Status.REJECTED


async def test_spike_and_stuck_registers_reach_validation_as_data(chain: Chain) -> None:
    first, _, _ = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)
    chain.fleet.set_fault("M-0001", "spike", spike_kwh=5000.0)
    spiked, _, _ = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)
    assert spiked - first > 5000  # the jump is delivered as read; judging it is VEE's job
    chain.fleet.set_fault("M-0001", "stuck")
    stuck = chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)[0]
    assert chain.reading(await chain.poll(), Channel.ENERGY_IMPORT)[0] == stuck  # consumption goes on, the register not
