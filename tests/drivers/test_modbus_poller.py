"""ModbusPoller against a real pymodbus server (SimFleet) over TCP."""

from __future__ import annotations

import asyncio
import struct

import pytest

from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, InvalidRequest, MeterTimeout, ModbusExceptionResponse, NotFound
from gateway.model import EventKind, Severity
from gateway.model.profiles import Function
from simulators.modbus import SimFleet
from tests.fixtures.modbus import Collected, MakeFleet, profile, running, wait_until
from tests.fixtures.ports import free_port

FAST_BACKOFF = Backoff(0.05, 0.2)


def targets_of(fleet: SimFleet, interval: float = 0.2) -> list[PollTarget]:
    return [PollTarget(m.meter_id, unit, fleet.profile, interval) for unit, m in fleet.meters.items()]


def endpoint(port: int, timeout: float = 0.2, framer: str = "socket") -> ModbusEndpoint:
    return ModbusEndpoint("sim", "127.0.0.1", port, framer=framer, timeout=timeout)


def kinds(got: Collected, meter_id: str) -> list[EventKind]:
    return [e.kind for e in got.events(meter_id)]


@pytest.mark.parametrize("framer", ["socket", "rtu"])
async def test_poll_cycle_emits_aligned_raw_registers_matching_the_simulator(
    make_modbus_fleet: MakeFleet, framer: str
) -> None:
    fleet = await make_modbus_fleet(update_interval=None, framer=framer)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port, framer=framer), targets_of(fleet), got)
    async with running(poller):
        await wait_until(lambda: all(got.raws(m.meter_id) for m in fleet.meters.values()), what="a poll of each")
    assert not got.failures()
    for unit, meter in fleet.meters.items():
        raw = got.raws(meter.meter_id)[0]
        assert [(b.function, b.address) for b in raw.blocks] == [(4, 0)]
        assert list(raw.blocks[0].words) == fleet.words(unit, 4, 0, 14)
        energy = struct.unpack(">f", struct.pack(">HH", *raw.blocks[0].words[:2]))[0]
        assert energy == pytest.approx(meter.energy_import, rel=1e-6)
        boundaries = raw.ts.timestamp() / 0.2
        assert boundaries == pytest.approx(round(boundaries), abs=1e-3)  # ts is the interval boundary
        assert raw.received_at >= raw.ts and raw.latency_s > 0
        health = poller.health()[meter.meter_id]
        assert health.last_raw == raw.blocks and health.consecutive_failures == 0


async def test_silent_meter_does_not_delay_others_and_reports_comm_lost_then_restored(
    make_modbus_fleet: MakeFleet,
) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    fleet.meters[2].fault = "timeout"
    got = Collected()
    interval = 0.2
    poller = ModbusPoller(endpoint(fleet.port, timeout=0.1), targets_of(fleet, interval), got)
    async with running(poller):
        await wait_until(lambda: EventKind.COMM_LOST in kinds(got, "M-0002"), what="comm_lost")
        before = poller.health()
        await asyncio.sleep(6 * interval)
        after = poller.health()
        # Each healthy meter kept its own pace while the silent one timed out on every poll.
        for meter_id in ("M-0001", "M-0003"):
            done = after[meter_id].polls - before[meter_id].polls
            assert done >= after["M-0002"].polls - before["M-0002"].polls - 1
            assert done >= 6 - 2
            assert after[meter_id].failures == 0
        fleet.meters[2].fault = None
        await wait_until(lambda: EventKind.COMM_RESTORED in kinds(got, "M-0002"), what="comm_restored")
    assert kinds(got, "M-0002") == [EventKind.COMM_LOST, EventKind.COMM_RESTORED]
    lost = got.events("M-0002")[0]
    assert lost.severity is Severity.WARNING and "timed out after 0.1 s" in lost.detail
    failures = got.failures("M-0002")
    assert len(failures) >= 3 and all(isinstance(f.error, MeterTimeout) for f in failures)
    assert str(failures[0].error) == (
        f"meter M-0002 (127.0.0.1:{fleet.port} unit 2): read input 0x0000×14 timed out after 0.1 s"
    )
    assert not got.events("M-0001") and not got.events("M-0003")


@pytest.mark.parametrize("code", [2, 4])
async def test_exception_answer_becomes_modbus_exception_response(make_modbus_fleet: MakeFleet, code: int) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.meters[1].fault = "exception"
    fleet.meters[1].exception_code = code
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet), got)
    async with running(poller):
        await wait_until(lambda: bool(got.failures()), what="a failure")
    error = got.failures()[0].error
    assert isinstance(error, ModbusExceptionResponse) and error.code == code and error.meter_id == "M-0001"
    health = poller.health()["M-0001"]
    assert health.last_error_kind == "modbus_exception" and health.consecutive_failures >= 1


async def test_server_stopped_then_restarted_poller_reconnects(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet), got, backoff=FAST_BACKOFF)
    ids = [m.meter_id for m in fleet.meters.values()]
    async with running(poller):
        await wait_until(lambda: all(got.raws(m) for m in ids), what="first polls")
        port = fleet.port
        await fleet.stop()
        await wait_until(lambda: all(EventKind.COMM_LOST in kinds(got, m) for m in ids), what="comm_lost")
        assert any(isinstance(f.error, ConnectionFailed) for f in got.failures())
        polled = {m: len(got.raws(m)) for m in ids}
        await fleet.start()
        assert fleet.port == port
        await wait_until(lambda: all(len(got.raws(m)) > polled[m] for m in ids), what="polls after restart")
        await wait_until(lambda: all(EventKind.COMM_RESTORED in kinds(got, m) for m in ids), what="restored")
    assert poller.health()["M-0001"].consecutive_failures == 0


async def test_device_down_at_start_keeps_retrying_until_it_appears(make_modbus_fleet: MakeFleet) -> None:
    port = free_port()
    got = Collected()
    poller = ModbusPoller(endpoint(port), [PollTarget("M-0001", 1, profile("generic"), 0.2)], got, backoff=FAST_BACKOFF)
    async with running(poller):
        await wait_until(lambda: kinds(got, "M-0001") == [EventKind.COMM_LOST], what="comm_lost")
        assert all(f.error.kind == "connection" for f in got.failures())
        await make_modbus_fleet(n=1, port=port, update_interval=None)
        await wait_until(lambda: EventKind.COMM_RESTORED in kinds(got, "M-0001"), what="comm_restored")
    assert got.raws("M-0001")


async def test_overrun_is_skipped_and_counted_not_queued(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.meters[1].fault = "slow"
    fleet.meters[1].delay = 0.5
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port, timeout=1.0), targets_of(fleet, 0.2), got)
    async with running(poller):
        await wait_until(lambda: len(got.raws()) >= 2, what="two slow polls")
    health = poller.health()["M-0001"]
    assert health.skipped >= 2 and health.failures == 0
    first, second = got.raws()[:2]
    gap = (second.ts - first.ts).total_seconds()
    assert gap >= 3 * 0.2 - 1e-6  # the boundaries in between were skipped, not polled late


async def test_poll_now_and_read_registers(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    async with ModbusPoller(endpoint(fleet.port), targets_of(fleet), Collected()) as poller:
        raw = await poller.poll_now("M-0002")
        assert raw.meter_id == "M-0002" and len(raw.blocks[0].words) == 14
        assert poller.health()["M-0002"].polls == 0  # poll_now leaves the poll counters alone
        assert await poller.read_registers(3, Function.INPUT, 2, 4) == tuple(fleet.words(3, 4, 2, 4))
        with pytest.raises(NotFound):
            await poller.poll_now("M-9999")
        with pytest.raises(InvalidRequest, match=r"read input 0x0000×126 of unit 1: need unit 1\.\.247, count 1\.\.125"):
            await poller.read_registers(1, Function.INPUT, 0, 126)
        with pytest.raises(ModbusExceptionResponse) as absent:
            await poller.read_registers(9, Function.INPUT, 0, 2)  # no such unit behind the "gateway"
        assert absent.value.code == 11 and absent.value.meter_id is None
        with pytest.raises(ModbusExceptionResponse) as no_holding:
            await poller.read_registers(1, Function.HOLDING, 0, 2)  # the generic map has none
        assert no_holding.value.code == 2 and no_holding.value.meter_id == "M-0001"
        assert poller.connected
    assert not poller.connected


async def test_garbage_words_are_delivered_as_read(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.meters[1].fault = "garbage"
    async with ModbusPoller(endpoint(fleet.port), targets_of(fleet), Collected()) as poller:
        raw = await poller.poll_now("M-0001")
    assert raw.blocks[0].words == (0xFFFF,) * 14  # decoding (NaN) is the normaliser's business
