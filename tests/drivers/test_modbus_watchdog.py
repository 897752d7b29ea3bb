"""drivers.modbus.watchdog: the time limit on a connection's request in flight, one timer for all."""

from __future__ import annotations

import asyncio

import pytest

from drivers.modbus import ModbusConnection, ModbusEndpoint
from drivers.modbus.watchdog import RequestWatchdog
from gateway.errors import MeterTimeout
from gateway.model.profiles import Function
from tests.fixtures.modbus import MakeFleet


async def test_a_hung_request_times_out_after_the_limit_and_the_next_one_too() -> None:
    watchdog = RequestWatchdog(0.1)
    loop = asyncio.get_running_loop()
    for _ in range(2):
        started = loop.time()
        with pytest.raises(TimeoutError):
            with watchdog:
                await asyncio.sleep(5)
        assert 0.09 <= loop.time() - started < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_the_limit_counts_from_each_request_not_from_the_timer() -> None:
    # Quick requests keep the one timer armed for an early deadline; a request that starts
    # late still gets its whole limit.
    watchdog = RequestWatchdog(0.2)
    loop = asyncio.get_running_loop()
    for _ in range(15):
        with watchdog:
            await asyncio.sleep(0.01)
    started = loop.time()
    with pytest.raises(TimeoutError):
        with watchdog:
            await asyncio.sleep(5)
    assert loop.time() - started >= 0.19


async def test_requests_in_time_pass_and_an_outside_cancel_stays_a_cancel() -> None:
    watchdog = RequestWatchdog(0.5)
    with watchdog:
        await asyncio.sleep(0)

    async def request() -> None:
        with watchdog:
            await asyncio.sleep(5)

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watchdog.close()


async def test_one_request_at_a_time() -> None:
    watchdog = RequestWatchdog(1.0)
    with watchdog, pytest.raises(RuntimeError, match="one request at a time"):
        with watchdog:
            pass


async def test_the_connection_times_a_silent_unit_out_itself_after_the_endpoint_timeout(
    make_modbus_fleet: MakeFleet,
) -> None:
    # pymodbus hands the request timeout over (no timer of its own per request): the
    # watchdog's limit is the endpoint's timeout, and an unanswered read fails after it.
    fleet = await make_modbus_fleet(n=2, update_interval=None)
    fleet.meters[1].fault = "timeout"
    ep = ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.3, retries=0)
    loop = asyncio.get_running_loop()
    async with ModbusConnection(ep) as conn:
        assert await conn.read(2, Function.INPUT, 0, 2) == tuple(fleet.words(2, 4, 0, 2))
        started = loop.time()
        with pytest.raises(MeterTimeout, match=r"read input 0x0000×2 timed out after 0\.3 s$"):
            await conn.read(1, Function.INPUT, 0, 2)
        assert 0.29 <= loop.time() - started < 0.6
        # The connection stays usable, and the late answer is not taken for the next one.
        fleet.meters[1].fault = None
        assert await conn.read(2, Function.INPUT, 0, 2) == tuple(fleet.words(2, 4, 0, 2))
        assert await conn.read(1, Function.INPUT, 0, 2) == tuple(fleet.words(1, 4, 0, 2))
        assert conn.stats.timeouts == 1 and conn.connects == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
