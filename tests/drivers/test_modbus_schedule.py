"""Scheduling, circuit breaker and latency window: pure logic with fake times, then the poller
driven by a fake clock against a real simulator (time moves; the test never waits for it)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from drivers.modbus import (
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    ModbusEndpoint,
    ModbusPoller,
    PollTarget,
    Schedule,
    Slot,
    send_offset,
)
from drivers.modbus.health import LatencyWindow
from drivers.samples import RawRegisters
from tests.fixtures.modbus import Collected, MakeFleet, running


def test_aligned_schedule_polls_each_boundary_after_its_offset() -> None:
    s = Schedule(900, align=True, offset=2)
    assert s.next(899.9) == Slot(900, 902)
    assert s.finished(Slot(900, 902), 903) == 0
    assert s.next(903) == Slot(1800, 1802)
    # Started between a boundary and its send time: that boundary is still ours.
    assert Schedule(900, offset=2).next(901) == Slot(900, 902)
    assert Schedule(900, offset=2).next(903) == Slot(1800, 1802)


def test_overrun_skips_and_counts_the_slots_it_covered() -> None:
    s = Schedule(900, offset=2)
    slot = s.next(899)
    assert s.finished(slot, 2800) == 2  # the sends of 1800 and 2700 passed while polling
    assert s.next(2800) == Slot(3600, 3602)
    assert s.finished(Slot(3600, 3602), 3602 + 899) == 0  # finishing before the next send is no overrun


def test_unaligned_and_back_to_back_schedules() -> None:
    s = Schedule(10, align=False, offset=3)
    first = s.next(1000.5)
    assert first.send_at == 1000.5  # the first poll goes now
    s.finished(first, 1001)
    assert s.next(1001) == Slot(first.due + 10, first.send_at + 10)
    zero = Schedule(0)
    assert zero.next(5.0) == Slot(5.0, 5.0) and zero.finished(Slot(5.0, 5.0), 99.0) == 0


def test_wall_clock_going_back_finds_its_place_again() -> None:
    s = Schedule(60, offset=1)
    s.finished(s.next(100_000), 100_001)
    assert s.next(50_000) == Slot(50_040, 50_041)


def test_schedule_and_offsets_are_validated_and_deterministic() -> None:
    with pytest.raises(ValueError, match="0 <= offset < interval"):
        Schedule(10, offset=10)
    with pytest.raises(ValueError):
        Schedule(-1)
    offsets = {send_offset(f"M-{i:04d}", 900) for i in range(200)}
    assert all(0 <= o < 5 for o in offsets) and len(offsets) == 200  # spread over at most 5 s
    assert send_offset("M-0001", 900) == send_offset("M-0001", 900)
    assert send_offset("M-0001", 10) < 1.0  # 10 % of a short interval
    assert 0 <= send_offset("M-0001", 900, jitter=60) < 60 and send_offset("M-0001", 900, jitter=0) == 0
    assert send_offset("M-0001", 1, jitter=60) < 1  # never more than the interval


def test_circuit_breaker_opens_probes_and_closes() -> None:
    b = CircuitBreaker(BreakerPolicy(failures=3, cooldown=10, max_cooldown=40))
    assert b.allow(0) and not b.failure(0) and not b.failure(1)
    assert b.failure(2) and b.state is BreakerState.OPEN
    assert not b.allow(5)
    assert b.allow(2 + 11) and b.state.value == "half_open"  # one probe after the cool-down
    assert b.failure(13) and b.state is BreakerState.OPEN  # the probe failed: open again, longer
    assert 13 + 18 <= b.open_until <= 13 + 22
    assert not b.allow(13 + 17) and b.allow(13 + 23)
    b.success()
    assert b.state.value == "closed" and b.failures == 0 and b.opened == 2
    with pytest.raises(ValueError):
        BreakerPolicy(failures=0)


def test_latency_window_percentiles() -> None:
    w = LatencyWindow(size=100)
    assert w.percentiles(50, 99) == (None, None)
    for i in range(1, 201):  # only the last 100 are kept: 101..200
        w.add(i / 1000)
    assert w.percentiles(50, 90, 99, 100) == (0.150, 0.190, 0.199, 0.200)


class FakeTime:
    """A wall clock, a monotonic clock and a sleep that move together, driven by `advance()`.

    Sleepers wait on futures; each step lets real I/O run briefly, then jumps the clock to the
    earliest sleeper's wake time and wakes it.
    """

    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def clock(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._ids), fut))
        await fut

    async def advance_until(self, done: object, steps: int = 200) -> None:
        for _ in range(steps):
            if done():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)  # real time for the reads in flight to finish
            if self._sleepers:
                wake, _, fut = heapq.heappop(self._sleepers)
                self.t = max(self.t, wake)
                if not fut.done():
                    fut.set_result(None)
        pytest.fail("fake time: condition not reached")


async def test_fake_clock_quarter_hour_reads_are_stamped_with_their_boundary(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=2, update_interval=None)
    fake = FakeTime(datetime(2025, 1, 15, 0, 14, 59, tzinfo=UTC))
    got = Collected()
    targets = [PollTarget(m.meter_id, u, fleet.profile, 900.0, jitter=60.0) for u, m in fleet.meters.items()]
    ep = ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.5)
    poller = ModbusPoller(ep, targets, got, clock=fake.clock, monotonic=fake.monotonic, sleep=fake.sleep)
    async with running(poller):
        await fake.advance_until(lambda: all(len(got.raws(t.meter_id)) >= 4 for t in targets))
    base = datetime(2025, 1, 15, 0, 15, tzinfo=UTC)
    for t in targets:
        raws = got.raws(t.meter_id)[:4]
        assert [r.ts for r in raws] == [base + timedelta(minutes=15 * k) for k in range(4)]
        offset = send_offset(t.meter_id, 900.0, 60.0)
        # Sent (and so received) after the boundary plus this meter's own offset, within the jitter window.
        sent = [(r.received_at - r.ts).total_seconds() for r in raws]
        assert all(offset - 1e-3 <= s < 60 for s in sent), (offset, sent)
    assert all(h.skipped == 0 for h in poller.health().values())


async def test_fake_clock_overrun_skips_boundaries(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fake = FakeTime(datetime(2025, 1, 15, 0, 14, 59, tzinfo=UTC))
    emitted: list[RawRegisters] = []

    async def emit(item: object) -> None:
        if isinstance(item, RawRegisters):
            emitted.append(item)
            if len(emitted) == 1:
                fake.t += 1900  # this poll "took" over two intervals (e.g. a full pipeline queue)

    target = PollTarget("M-0001", 1, fleet.profile, 900.0, jitter=0.0)
    ep = ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.5)
    poller = ModbusPoller(ep, [target], emit, clock=fake.clock, monotonic=fake.monotonic, sleep=fake.sleep)
    async with running(poller):
        await fake.advance_until(lambda: len(emitted) >= 2)
    assert [r.ts.strftime("%H:%M") for r in emitted[:2]] == ["00:15", "01:00"]
    assert poller.health()["M-0001"].skipped == 2
