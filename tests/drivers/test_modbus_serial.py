"""Serial RTU over a pseudo-terminal pair (socat): the simulator serves one end as an RS-485 bus
of several units, the poller polls the other end through pymodbus' serial client."""

from __future__ import annotations

import pytest

from drivers.modbus import BreakerPolicy, ModbusEndpoint, ModbusPoller, PollTarget, SerialLine
from gateway.errors import MeterTimeout
from gateway.model import EventKind
from gateway.model.profiles import Function
from simulators.modbus import SimFleet
from tests.fixtures.modbus import Collected, MakeFleet, running, wait_until


def serial_endpoint(device: str, timeout: float = 0.2) -> ModbusEndpoint:
    return ModbusEndpoint("rs485", transport="serial", serial=SerialLine(device, 19200, "N", 1, 8),
                          timeout=timeout, retries=0, late_reply_grace=0.1)


async def test_serial_bus_polls_every_unit_and_survives_a_silent_one(
    make_modbus_fleet: MakeFleet, serial_pair: tuple[str, str]
) -> None:
    server_end, client_end = serial_pair
    fleet: SimFleet = await make_modbus_fleet("sdm630", n=3, update_interval=None, transport="serial",
                                              serial_port=server_end, baudrate=19200)
    fleet.set_fault("M-0003", "timeout")
    got = Collected()
    targets = [PollTarget(m.meter_id, u, fleet.profile, 0.3) for u, m in fleet.meters.items()]
    poller = ModbusPoller(serial_endpoint(client_end), targets, got, breaker=BreakerPolicy(failures=1000))
    async with running(poller):
        await wait_until(lambda: all(len(got.raws(m)) >= 3 for m in ("M-0001", "M-0002")), what="3 polls each",
                         timeout=15)
        await wait_until(lambda: EventKind.COMM_LOST in [e.kind for e in got.events("M-0003")], what="comm_lost",
                         timeout=15)
    for unit in (1, 2):
        raw = got.raws(f"M-000{unit}")[-1]
        assert [(b.function, b.address, len(b.words)) for b in raw.blocks] == [(4, 0x00, 12), (4, 0x34, 24)]
        assert list(raw.blocks[1].words) == fleet.words(unit, 4, 0x34, 24)
    assert all(isinstance(f.error, MeterTimeout) for f in got.failures("M-0003"))
    assert "rs485" not in str(got.failures("M-0003")[0].error)  # messages name the device path
    assert client_end in str(got.failures("M-0003")[0].error)
    # A silent unit never closes the shared port: the healthy units kept one connection.
    assert poller.connection_stats().connects == 1 and poller.connection_stats().drops == 0


async def test_serial_raw_read_and_absent_unit(make_modbus_fleet: MakeFleet, serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    fleet = await make_modbus_fleet("generic", n=2, update_interval=None, transport="serial",
                                    serial_port=server_end, baudrate=19200)
    targets = [PollTarget(m.meter_id, u, fleet.profile, 60.0) for u, m in fleet.meters.items()]
    async with ModbusPoller(serial_endpoint(client_end, timeout=0.1), targets, Collected()) as poller:
        assert await poller.read_registers(2, Function.INPUT, 0, 4) == tuple(fleet.words(2, 4, 0, 4))
        with pytest.raises(MeterTimeout):
            await poller.read_registers(9, Function.INPUT, 0, 2)  # nobody at unit 9: silence on a bus
        raw = await poller.poll_now("M-0001")  # and the bus still works after the silence
        assert raw.blocks[0].words == tuple(fleet.words(1, 4, 0, 15))
