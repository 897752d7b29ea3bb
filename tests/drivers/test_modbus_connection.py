"""ModbusConnection (lazy connect, backoff, failure mapping) and gateway.backoff."""

from __future__ import annotations

import random

import pytest

from drivers.modbus import ModbusConnection, ModbusEndpoint
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, MeterTimeout
from gateway.model.profiles import Function
from tests.fixtures.modbus import MakeFleet
from tests.fixtures.ports import free_port


def test_backoff_grows_caps_jitters_and_resets() -> None:
    plain = Backoff(1.0, 5.0, jitter=0.0)
    assert [plain.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    plain.reset()
    assert plain.next() == 1.0
    jittered = Backoff(1.0, 100.0, factor=3, jitter=0.1, rng=random.Random(1))
    for expected in (1.0, 3.0, 9.0, 27.0):
        assert expected * 0.9 <= jittered.next() <= expected * 1.1
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_endpoint_is_validated() -> None:
    with pytest.raises(ValueError, match="framer 'ascii' unknown"):
        ModbusEndpoint("e", "h", framer="ascii")


async def test_nothing_listening_fails_then_waits_out_the_backoff() -> None:
    port = free_port()
    ep = ModbusEndpoint("down", "127.0.0.1", port, timeout=0.2)
    async with ModbusConnection(ep, backoff=Backoff(30.0, 60.0)) as conn:
        with pytest.raises(ConnectionFailed, match=rf"^meter M-1 \(127\.0\.0\.1:{port} unit 1\): connect to"):
            await conn.read(1, Function.INPUT, 0, 2, meter_id="M-1")
        # Within the backoff delay the next read fails at once, without trying to connect.
        with pytest.raises(ConnectionFailed, match="not connected; next connect attempt in"):
            await conn.read(1, Function.INPUT, 0, 2)
        assert conn.connects == 0


async def test_silent_connection_is_dropped_and_reopened(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=1, update_interval=None)
    fleet.meters[1].fault = "timeout"
    ep = ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.1)
    async with ModbusConnection(ep, drop_after_timeouts=2) as conn:
        with pytest.raises(MeterTimeout):
            await conn.read(1, Function.INPUT, 0, 2)
        assert conn.connected
        with pytest.raises(MeterTimeout):
            await conn.read(1, Function.INPUT, 0, 2)
        assert not conn.connected  # every request unanswered: maybe a half-open socket, reconnect
        fleet.meters[1].fault = None
        assert await conn.read(1, Function.INPUT, 0, 2) == tuple(fleet.words(1, 4, 0, 2))
        assert conn.connects == 2
    assert not conn.connected
