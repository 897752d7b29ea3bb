"""The bus lock of issue 19 item 3: waiters served by priority, then arrival; a cancelled waiter
neither holds nor loses the bus."""

from __future__ import annotations

import asyncio

import pytest

from drivers.polling.buslock import FAILING, HEALTHY, RETRY, BusLock


async def test_waiters_go_by_priority_then_arrival_and_a_holder_is_never_preempted() -> None:
    lock = BusLock()
    order: list[str] = []

    async def poll(name: str, priority: int) -> None:
        async with lock.hold(priority):
            order.append(name)
            await asyncio.sleep(0)

    await lock.acquire()  # a poll holds the bus while the others arrive
    tasks = [asyncio.create_task(poll(name, p)) for name, p in
             [("retry", RETRY), ("failing", FAILING), ("healthy-1", HEALTHY), ("healthy-2", HEALTHY)]]
    await asyncio.sleep(0)
    assert order == [] and lock.locked()
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["healthy-1", "healthy-2", "failing", "retry"]
    assert not lock.locked()


async def test_a_cancelled_waiter_is_skipped_and_one_cancelled_as_it_is_served_passes_the_bus_on() -> None:
    lock = BusLock()
    await lock.acquire()
    gone = asyncio.create_task(lock.acquire(HEALTHY))
    served = asyncio.create_task(lock.acquire(FAILING))
    last = asyncio.create_task(lock.acquire(RETRY))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    lock.release()  # to `served`, skipping `gone`
    served.cancel()  # ... which is cancelled before it runs: the bus goes on to `last`
    with pytest.raises(asyncio.CancelledError):
        await served
    await last
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="released while free"):
        lock.release()


async def test_a_lower_priority_poll_handed_the_bus_just_before_a_healthy_send_gives_it_back_and_waits() -> None:
    waits: list[float] = []
    clear = [0.3, 0.0]  # a healthy meter sends within its guard, then it has

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    lock = BusLock(clear=lambda: clear.pop(0), sleep=sleep)
    await lock.acquire(FAILING)
    assert waits == [0.3] and lock.locked()
    lock.release()
    await lock.acquire(HEALTHY)  # a healthy poll never waits for the gate
    assert waits == [0.3] and clear == []
