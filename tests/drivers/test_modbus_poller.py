"""ModbusPoller against a real pymodbus server (SimFleet) over TCP and RTU over TCP."""

from __future__ import annotations

import asyncio
import struct

import pytest

from drivers.modbus import BreakerPolicy, ModbusEndpoint, ModbusPoller, PollTarget
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, InvalidRequest, MeterTimeout, ModbusExceptionResponse, NotFound
from gateway.model import EventKind, Severity
from gateway.model.profiles import Function
from simulators.modbus import SimFleet
from tests.fixtures.modbus import Collected, MakeFleet, profile, running, wait_until
from tests.fixtures.ports import free_port

FAST_BACKOFF = Backoff(0.05, 0.2)
NO_BREAKER = BreakerPolicy(failures=1000)
GENERIC_WORDS = 15  # 7 float32 channels and the status word


def targets_of(fleet: SimFleet, interval: float = 0.2, **kw: object) -> list[PollTarget]:
    return [PollTarget(m.meter_id, unit, fleet.profile, interval, **kw) for unit, m in fleet.meters.items()]  # type: ignore[arg-type]


def endpoint(port: int, timeout: float = 0.2, transport: str = "tcp", **kw: object) -> ModbusEndpoint:
    kw.setdefault("retries", 0)
    return ModbusEndpoint("sim", "127.0.0.1", port, transport=transport, timeout=timeout, **kw)  # type: ignore[arg-type]


def kinds(got: Collected, meter_id: str) -> list[EventKind]:
    return [e.kind for e in got.events(meter_id)]


@pytest.mark.parametrize("transport", ["tcp", "rtu_tcp"])
async def test_poll_cycle_emits_aligned_raw_registers_matching_the_simulator(
    make_modbus_fleet: MakeFleet, transport: str
) -> None:
    fleet = await make_modbus_fleet(update_interval=None, transport=transport)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port, transport=transport), targets_of(fleet), got)
    async with running(poller):
        await wait_until(lambda: all(got.raws(m.meter_id) for m in fleet.meters.values()), what="a poll of each")
    assert not got.failures()
    for unit, meter in fleet.meters.items():
        raw = got.raws(meter.meter_id)[0]
        assert [(b.function, b.address) for b in raw.blocks] == [(4, 0)]
        assert list(raw.blocks[0].words) == fleet.words(unit, 4, 0, GENERIC_WORDS)
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
    fleet.set_fault("M-0002", "timeout")
    got = Collected()
    interval = 0.2
    poller = ModbusPoller(endpoint(fleet.port, timeout=0.1), targets_of(fleet, interval), got, breaker=NO_BREAKER)
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
        fleet.set_fault("M-0002", None)
        await wait_until(lambda: EventKind.COMM_RESTORED in kinds(got, "M-0002"), what="comm_restored")
    assert kinds(got, "M-0002") == [EventKind.COMM_LOST, EventKind.COMM_RESTORED]
    lost = got.events("M-0002")[0]
    assert lost.severity is Severity.WARNING and "timed out after 0.1 s" in lost.detail
    failures = got.failures("M-0002")
    assert len(failures) >= 3 and all(isinstance(f.error, MeterTimeout) for f in failures)
    assert str(failures[0].error) == (
        f"meter M-0002 (127.0.0.1:{fleet.port} unit 2): read input 0x0000×{GENERIC_WORDS} timed out after 0.1 s"
    )
    assert not got.events("M-0001") and not got.events("M-0003")


@pytest.mark.parametrize(("code", "name"), [(2, "illegal data address"), (4, "server device failure"),
                                            (6, "server device busy")])
async def test_exception_answer_becomes_a_named_modbus_exception(
    make_modbus_fleet: MakeFleet, code: int, name: str
) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.set_fault("M-0001", "exception", exception_code=code)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet), got)
    async with running(poller):
        await wait_until(lambda: bool(got.failures()), what="a failure")
    error = got.failures()[0].error
    assert isinstance(error, ModbusExceptionResponse) and error.code == code and error.meter_id == "M-0001"
    assert error.name == name and f"Modbus exception {code} ({name})" in str(error)
    health = poller.health()["M-0001"]
    assert health.last_error_kind == "modbus_exception" and health.consecutive_failures >= 1


async def test_busy_device_is_retried_with_backoff_then_answers(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.set_fault("M-0001", "exception", exception_code=6)  # server device busy
    got = Collected()
    ep = endpoint(fleet.port, retries=3, retry_delay=0.2)
    async with ModbusPoller(ep, targets_of(fleet), got) as poller:
        read = asyncio.create_task(poller.poll_now("M-0001"))
        # The first attempt failed busy; while the retry waits, the device stops being busy.
        await wait_until(lambda: fleet.requests >= 1, what="the first attempt")
        fleet.set_fault("M-0001", None)
        raw = await read
        assert raw.blocks[0].words == tuple(fleet.words(1, 4, 0, GENERIC_WORDS))
        assert poller.connection_stats().retries >= 1
        # An illegal address is not worth asking again: no retry.
        fleet.set_fault("M-0001", "exception", exception_code=2)
        retries = poller.connection_stats().retries
        with pytest.raises(ModbusExceptionResponse):
            await poller.poll_now("M-0001")
        assert poller.connection_stats().retries == retries


async def test_timeouts_are_retried_up_to_the_limit(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.set_fault("M-0001", "timeout")
    async with ModbusPoller(endpoint(fleet.port, timeout=0.05, retries=2, retry_delay=0.01),
                            targets_of(fleet), Collected()) as poller:
        before = fleet.requests
        with pytest.raises(MeterTimeout):
            await poller.poll_now("M-0001")
        assert fleet.requests - before == 3  # the first attempt and two retries
        stats = poller.connection_stats()
        assert stats.retries == 2 and stats.timeouts == 3


async def test_circuit_breaker_stops_polling_a_dead_meter_then_probes(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=2, update_interval=None)
    fleet.set_fault("M-0002", "timeout")
    got = Collected()
    breaker = BreakerPolicy(failures=2, cooldown=1.5, max_cooldown=1.5)
    poller = ModbusPoller(endpoint(fleet.port, timeout=0.05), targets_of(fleet, 0.1), got, breaker=breaker,
                          failures_before_lost=2)
    async with running(poller):
        await wait_until(lambda: poller.health()["M-0002"].breaker == "open", what="the breaker to open")
        opened_at = poller.health()["M-0002"]
        await wait_until(lambda: poller.health()["M-0002"].breaker_skips >= 3, what="skipped slots")
        # While open, the dead meter costs no bus time: no new attempts.
        assert poller.health()["M-0002"].polls == opened_at.polls
        fleet.set_fault("M-0002", None)
        await wait_until(lambda: poller.health()["M-0002"].breaker == "closed", what="a probe that succeeds")
        await wait_until(lambda: EventKind.COMM_RESTORED in kinds(got, "M-0002"), what="comm_restored")
    health = poller.health()
    assert health["M-0002"].consecutive_failures == 0 and health["M-0001"].breaker_skips == 0
    assert kinds(got, "M-0002") == [EventKind.COMM_LOST, EventKind.COMM_RESTORED]


async def test_server_stopped_then_restarted_poller_reconnects(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet), got, backoff=FAST_BACKOFF, breaker=NO_BREAKER)
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
    assert poller.connection_stats().connects == 2


async def test_device_down_at_start_keeps_retrying_until_it_appears(make_modbus_fleet: MakeFleet) -> None:
    port = free_port()
    got = Collected()
    poller = ModbusPoller(endpoint(port), [PollTarget("M-0001", 1, profile("generic"), 0.2)], got,
                          backoff=FAST_BACKOFF, breaker=NO_BREAKER)
    async with running(poller):
        await wait_until(lambda: kinds(got, "M-0001") == [EventKind.COMM_LOST], what="comm_lost")
        assert all(f.error.kind == "connection" for f in got.failures())
        await make_modbus_fleet(n=1, port=port, update_interval=None)
        await wait_until(lambda: EventKind.COMM_RESTORED in kinds(got, "M-0001"), what="comm_restored")
    assert got.raws("M-0001")


async def test_overrun_is_skipped_and_counted_not_queued(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.set_fault("M-0001", "slow", delay=0.5)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port, timeout=1.0), targets_of(fleet, 0.2, jitter=0.0), got)
    async with running(poller):
        await wait_until(lambda: len(got.raws()) >= 2, what="two slow polls")
    health = poller.health()["M-0001"]
    assert health.skipped >= 2 and health.failures == 0
    first, second = got.raws()[:2]
    gap = (second.ts - first.ts).total_seconds()
    assert gap >= 3 * 0.2 - 1e-6  # the boundaries in between were skipped, not polled late


async def test_back_to_back_polling_with_interval_zero(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=2, update_interval=None)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet, 0.0), got)
    async with running(poller):
        await wait_until(lambda: all(len(got.raws(m)) >= 20 for m in ("M-0001", "M-0002")), what="20 polls each")
    health = poller.health()
    assert all(h.skipped == 0 and h.failures == 0 for h in health.values())


async def test_health_has_latency_percentiles(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    got = Collected()
    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet, 0.0), got)
    assert poller.health()["M-0001"].latency_p50_s is None
    async with running(poller):
        await wait_until(lambda: len(got.raws()) >= 30, what="30 polls")
    h = poller.health()["M-0001"]
    assert h.latency_p50_s is not None and h.latency_p90_s is not None and h.latency_p99_s is not None
    assert 0 < h.latency_p50_s <= h.latency_p90_s <= h.latency_p99_s
    latencies = sorted(r.latency_s for r in got.raws())
    assert latencies[0] <= h.latency_p50_s <= latencies[-1]
    assert h.last_attempt is not None and h.last_success is not None and h.breaker == "closed"


async def test_rtu_over_tcp_late_answer_is_not_taken_for_the_next_one(make_modbus_fleet: MakeFleet) -> None:
    """RTU frames have no transaction id: after a timeout the bus stays quiet for the grace
    time, so the late answer is dropped instead of answering the next request."""
    fleet = await make_modbus_fleet(n=1, update_interval=None, transport="rtu_tcp")
    fleet.set_fault("M-0001", "slow", delay=0.4)
    ep = endpoint(fleet.port, timeout=0.3, transport="rtu_tcp", late_reply_grace=0.4)
    async with ModbusPoller(ep, targets_of(fleet), Collected()) as poller:
        with pytest.raises(MeterTimeout):
            await poller.read_registers(1, Function.INPUT, 0, GENERIC_WORDS)
        # The next answer comes in time (0.2 s), but without the grace the late 15-word answer
        # (0.1 s after the timeout) would arrive while this 2-word read is outstanding.
        fleet.set_fault("M-0001", "slow", delay=0.2)
        assert await poller.read_registers(1, Function.INPUT, 2, 2) == tuple(fleet.words(1, 4, 2, 2))


async def test_poll_now_and_read_registers(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    async with ModbusPoller(endpoint(fleet.port), targets_of(fleet), Collected()) as poller:
        raw = await poller.poll_now("M-0002")
        assert raw.meter_id == "M-0002" and len(raw.blocks[0].words) == GENERIC_WORDS
        assert poller.health()["M-0002"].polls == 0  # poll_now leaves the poll counters alone
        assert await poller.read_registers(3, Function.INPUT, 2, 4) == tuple(fleet.words(3, 4, 2, 4))
        with pytest.raises(NotFound):
            await poller.poll_now("M-9999")
        with pytest.raises(InvalidRequest, match=r"read input 0x0000×126 of unit 1: need unit 1\.\.247, count 1\.\.125"):
            await poller.read_registers(1, Function.INPUT, 0, 126)
        with pytest.raises(InvalidRequest):
            await poller.read_registers(1, Function.INPUT, 0xFFFF, 2)  # past the last register
        with pytest.raises(ValueError):
            await poller.read_registers(1, "coil", 0, 2)  # type: ignore[arg-type]  # read-only FC 03/04 only
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
    fleet.set_fault("M-0001", "garbage")
    async with ModbusPoller(endpoint(fleet.port), targets_of(fleet), Collected()) as poller:
        raw = await poller.poll_now("M-0001")
    # Decoding (NaN) is the normaliser's business; the status word is still a status word.
    assert raw.blocks[0].words[:14] == (0xFFFF,) * 14


def test_targets_are_validated() -> None:
    generic = profile("generic")
    with pytest.raises(ValueError, match=r"need unit in 1\.\.247, interval >= 0 and jitter >= 0"):
        PollTarget("M-1", 0, generic, 1.0)
    with pytest.raises(ValueError, match="jitter"):
        PollTarget("M-1", 1, generic, 1.0, jitter=-1)
    with pytest.raises(ValueError, match="meter M-2 unit 1 is listed twice"):
        ModbusPoller(endpoint(502), [PollTarget("M-1", 1, generic, 1.0), PollTarget("M-2", 1, generic, 1.0)],
                     Collected())


async def test_a_swallowed_cancel_still_stops_the_poller(make_modbus_fleet: MakeFleet) -> None:
    """On Python 3.11 a cancel that races a reply can be swallowed inside pymodbus (its
    asyncio.wait_for); the meter loop must notice it was asked to stop and stop anyway."""
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    swallowed = asyncio.Event()

    async def emit(item: object) -> None:
        if not swallowed.is_set():
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                swallowed.set()  # swallowed, as wait_for does when the reply wins the race

    poller = ModbusPoller(endpoint(fleet.port), targets_of(fleet, 0.0), emit)
    task = asyncio.create_task(poller.run())
    await wait_until(lambda: poller.health()["M-0001"].polls >= 1, what="a poll")
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert swallowed.is_set() and task in done and task.cancelled()
