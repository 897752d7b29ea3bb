"""ModbusConnection (lazy connect, backoff, failure mapping) and gateway.backoff."""

from __future__ import annotations

import random

import pytest

from drivers.modbus import ModbusConnection, ModbusEndpoint, SerialLine
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, MeterTimeout
from gateway.model.profiles import Function
from tests.fixtures.modbus import MakeFleet
from tests.fixtures.ports import free_port


def test_pymodbus_error_lines_are_demoted_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    ModbusConnection(ModbusEndpoint("e", "h"))  # installs the filter
    with caplog.at_level(logging.INFO):
        logging.getLogger("pymodbus.logging").error("No response received after 0 retries")
    assert not caplog.records


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
    with pytest.raises(ValueError, match="transport 'udp' unknown"):
        ModbusEndpoint("e", "h", transport="udp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="framer 'rtu' contradicts transport 'tcp'"):
        ModbusEndpoint("e", "h", framer="rtu", transport="tcp")
    with pytest.raises(ValueError, match="transport 'serial' needs a serial line"):
        ModbusEndpoint("e", transport="serial")
    with pytest.raises(ValueError, match="transport 'tcp' needs a host"):
        ModbusEndpoint("e")


@pytest.mark.parametrize(("kw", "kind", "rtu", "grace", "address"), [
    ({"host": "h"}, "tcp", False, 0.0, "h:502"),
    ({"host": "h", "framer": "socket"}, "tcp", False, 0.0, "h:502"),
    ({"host": "h", "framer": "rtu", "timeout": 2.0}, "rtu_tcp", True, 1.0, "h:502"),
    ({"host": "h", "port": 4001, "transport": "rtu_tcp", "late_reply_grace": 0.3}, "rtu_tcp", True, 0.3, "h:4001"),
    ({"transport": "serial", "serial": SerialLine("/dev/ttyUSB0", 19200, "E")}, "serial", True, 0.5, "/dev/ttyUSB0"),
])
def test_endpoint_transports(kw: dict[str, object], kind: str, rtu: bool, grace: float, address: str) -> None:
    ep = ModbusEndpoint("e", **kw)  # type: ignore[arg-type]
    assert (ep.kind, ep.rtu_framing, ep.grace, ep.address) == (kind, rtu, grace, address)


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
    ep = ModbusEndpoint("sim", "127.0.0.1", fleet.port, timeout=0.1, retries=0)
    async with ModbusConnection(ep, drop_after_timeouts=2) as conn:
        with pytest.raises(MeterTimeout):
            await conn.read(1, Function.INPUT, 0, 2)
        assert conn.connected
        with pytest.raises(MeterTimeout):
            await conn.read(1, Function.INPUT, 0, 2)
        assert not conn.connected  # every request unanswered: maybe a half-open socket, reconnect
        fleet.meters[1].fault = None
        assert await conn.read(1, Function.INPUT, 0, 2) == tuple(fleet.words(1, 4, 0, 2))
        assert conn.connects == 2 and conn.stats.drops == 1 and conn.stats.timeouts == 2
    assert not conn.connected
