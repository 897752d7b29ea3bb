"""The shipped profiles polled from pymodbus' own server, not from our simulator.

Each unit of one pymodbus `ModbusTcpServer` is a `SimDevice` whose `SimData` hold register values
written in this file from the manufacturers' documents (register numbers as printed, values as the
meter's display would show them). pymodbus encodes the big-endian types itself; only Carlo Gavazzi's
"INT32, LSW first", which pymodbus' datastore cannot express, is laid out here word by word. Our
poller plans and reads the blocks, the product's Normaliser decodes them: neither our simulator
nor its register tables take part, so the two cannot agree on the same mistake.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget
from gateway.config.profiles import load_profiles
from gateway.model import Channel, Quality
from gateway.normalise.normaliser import Normaliser
from tests.fixtures.modbus import Collected, running, wait_until

F32, I16, U16, I32, U32, I64, U64 = (DataType.FLOAT32, DataType.INT16, DataType.UINT16, DataType.INT32,
                                     DataType.UINT32, DataType.INT64, DataType.UINT64)
_WORDS = {F32: 2, I16: 1, U16: 1, I32: 2, U32: 2, I64: 4, U64: 4}


@dataclass(frozen=True)
class Vector:
    """One register as the document prints it, the value the meter holds, and what it means."""

    number: int  # register number as printed (Eastron 3xxxx; ABB / Carlo Gavazzi hex address)
    datatype: DataType
    raw: int | float  # the value in the register, in the document's counts
    channel: Channel | None = None  # None: a neighbour no profile should read
    canonical: float = 0.0  # what the gateway must store: canonical unit (kWh, kW, V, A, Hz)
    lsw_first: bool = False


@dataclass(frozen=True)
class Device:
    profile: str
    function: str  # "holding" | "input"
    numbering: int  # the document's number of wire address 0
    vectors: tuple[Vector, ...]


V = Vector
DEVICES = {
    # Eastron SDM630 Modbus Protocol (SDM630Register.pdf): input registers, float32 high word first.
    1: Device("sdm630", "input", 30001, (
        V(30001, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(30003, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(30005, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(30007, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(30009, F32, 16.0, Channel.CURRENT_L2, 16.0), V(30011, F32, 3.5, Channel.CURRENT_L3, 3.5),
        V(30013, F32, -1210.0), V(30015, F32, -2311.5), V(30017, F32, -800.0),  # phase powers, W
        V(30053, F32, -4321.5, Channel.POWER, -4.3215),  # total system power, W (exporting)
        V(30057, F32, 4597.3), V(30061, F32, 1568.9),  # total VA, total VAr
        V(30063, F32, 0.94, Channel.POWER_FACTOR, 0.94), V(30067, F32, 19.9),  # total PF, phase angle
        V(30071, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(30073, F32, 12345.6, Channel.ENERGY_IMPORT, 12345.6), V(30075, F32, 321.0, Channel.ENERGY_EXPORT, 321.0),
        V(30077, F32, 3703.7), V(30079, F32, 96.3),  # import / export kVArh
    )),
    # Eastron SDM120-Modbus protocol manual (sdm120modbus_manual.pdf): input registers, float32.
    2: Device("sdm120", "input", 30001, (
        V(30001, F32, 230.1, Channel.VOLTAGE_L1, 230.1), V(30007, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(30013, F32, 1234.5, Channel.POWER, 1.2345), V(30019, F32, 1272.7), V(30025, F32, 309.4),
        V(30031, F32, 0.97, Channel.POWER_FACTOR, 0.97), V(30037, F32, 14.1),
        V(30071, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(30073, F32, 12345.6, Channel.ENERGY_IMPORT, 12345.6), V(30075, F32, 12.5, Channel.ENERGY_EXPORT, 12.5),
        V(30077, F32, 3703.7), V(30079, F32, 3.75),
    )),
    # ABB B23/B24 User Manual 2CMC485003M0201, Modbus mapping tables: holding registers, big endian.
    3: Device("abb_b23", "holding", 0, (
        V(0x5000, U64, 123456789, Channel.ENERGY_IMPORT, 1234567.89), V(0x5004, U64, 4321, Channel.ENERGY_EXPORT, 43.21),
        V(0x5008, I64, 123452468),  # net kWh
        V(0x5B00, U32, 2301, Channel.VOLTAGE_L1, 230.1), V(0x5B02, U32, 2312, Channel.VOLTAGE_L2, 231.2),
        V(0x5B04, U32, 2289, Channel.VOLTAGE_L3, 228.9),
        V(0x5B06, U32, 3995), V(0x5B08, U32, 3985), V(0x5B0A, U32, 3976),  # line-to-line volts
        V(0x5B0C, U32, 1234, Channel.CURRENT_L1, 12.34), V(0x5B0E, U32, 567, Channel.CURRENT_L2, 5.67),
        V(0x5B10, U32, 89, Channel.CURRENT_L3, 0.89), V(0x5B12, U32, 300),  # neutral current
        V(0x5B14, I32, -150000, Channel.POWER, -1.5),  # 0.01 W, exporting
        V(0x5B16, I32, -100000), V(0x5B18, I32, -40000), V(0x5B1A, I32, -10000),
        V(0x5B2C, U16, 5001, Channel.FREQUENCY, 50.01),
        V(0x5B3A, I16, -950, Channel.POWER_FACTOR, -0.95), V(0x5B3B, I16, -990), V(0x5B3C, I16, -930),
    )),
    # Carlo Gavazzi EM24-DIN communication protocol: input registers, INT32 least significant word first.
    4: Device("em24", "input", 0, (
        V(0x0000, I32, 2301, Channel.VOLTAGE_L1, 230.1, True), V(0x0002, I32, 2312, Channel.VOLTAGE_L2, 231.2, True),
        V(0x0004, I32, 2289, Channel.VOLTAGE_L3, 228.9, True),
        V(0x000C, I32, 12345, Channel.CURRENT_L1, 12.345, True), V(0x000E, I32, 6789, Channel.CURRENT_L2, 6.789, True),
        V(0x0010, I32, 1011, Channel.CURRENT_L3, 1.011, True),
        V(0x0012, I32, 40000, lsw_first=True), V(0x0014, I32, 25000, lsw_first=True),  # W L1, L2
        V(0x0028, I32, 70000, Channel.POWER, 7.0, True),  # W sys, 0.1 W
        V(0x0032, I16, 980), V(0x0033, I16, 990), V(0x0034, I16, 970),  # PF L1-L3
        V(0x0035, I16, 998, Channel.POWER_FACTOR, 0.998), V(0x0037, I16, 500, Channel.FREQUENCY, 50.0),
        V(0x003E, I32, 1234567, Channel.ENERGY_IMPORT, 123456.7, True),  # kWh (+) TOT
        V(0x0040, I32, 400000, lsw_first=True),  # kvarh (+) TOT
        V(0x0042, I32, 2345, lsw_first=True),  # kWh (+) PAR: reset by the user last spring
        V(0x0046, I32, 500000, lsw_first=True),  # kWh (+) L1
        V(0x005C, I32, 15, Channel.ENERGY_EXPORT, 1.5, True), V(0x005E, I32, 7, lsw_first=True),
    )),
    # meter-gateway generic map v1: input registers, float32, status word at 14 (bit 0 tamper).
    5: Device("generic", "input", 0, (
        V(0, F32, 4321.5, Channel.ENERGY_IMPORT, 4321.5), V(2, F32, 12.25, Channel.ENERGY_EXPORT, 12.25),
        V(4, F32, 1.75, Channel.POWER, 1.75), V(6, F32, 229.5, Channel.VOLTAGE_L1, 229.5),
        V(8, F32, 8.0, Channel.CURRENT_L1, 8.0), V(10, F32, 49.98, Channel.FREQUENCY, 49.98),
        V(12, F32, 0.95, Channel.POWER_FACTOR, 0.95), V(14, U16, 0b1),  # tamper bit raised
    )),
}


def simdata(device: Device) -> list[SimData]:
    """The device's registers, lowest to highest; holes between them read 0, as real meters answer."""
    blocks: list[SimData] = []
    at: int | None = None
    for v in sorted(device.vectors, key=lambda v: v.number):
        address = v.number - device.numbering
        if at is not None and address > at:
            blocks.append(SimData(at, count=address - at, values=0, datatype=DataType.REGISTERS))
        if v.lsw_first:  # Carlo Gavazzi: low word at the lower address
            hi, lo = struct.unpack(">HH", struct.pack(">i", int(v.raw)))
            blocks.append(SimData(address, values=[lo, hi], datatype=DataType.REGISTERS))
        else:  # pymodbus encodes the type, big endian
            blocks.append(SimData(address, values=v.raw, datatype=v.datatype))
        at = address + _WORDS[v.datatype]
    return blocks


@pytest.fixture
async def public_server() -> AsyncIterator[int]:
    """pymodbus' TCP server with one SimDevice per model; yields its port."""
    bits = [SimData(0, values=[False], datatype=DataType.BITS)]
    devices = []
    for unit, device in DEVICES.items():
        registers = simdata(device)
        holding, inputs = (registers, [SimData(0)]) if device.function == "holding" else ([SimData(0)], registers)
        devices.append(SimDevice(unit, simdata=(bits, bits, holding, inputs)))
    server = ModbusTcpServer(devices, framer=FramerType.SOCKET, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        yield int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    finally:
        listener = server.transport
        await server.shutdown()  # type: ignore[no-untyped-call]
        if listener is not None and hasattr(listener, "wait_closed"):
            await listener.wait_closed()


async def test_shipped_profiles_read_pymodbus_server_images_written_from_the_datasheets(public_server: int) -> None:
    profiles = load_profiles()
    assert {d.profile for d in DEVICES.values()} == set(profiles)  # every shipped profile has its vectors
    targets = [PollTarget(d.profile, unit, profiles[d.profile], 0.2) for unit, d in DEVICES.items()]
    got = Collected()
    endpoint = ModbusEndpoint("pymodbus", "127.0.0.1", public_server, timeout=1.0, retries=0)
    async with running(ModbusPoller(endpoint, targets, got)):
        await wait_until(lambda: all(got.raws(t.meter_id) for t in targets), what="a poll of every unit")
    assert not got.failures(), got.failures()
    wrong = []
    for device in DEVICES.values():
        profile = profiles[device.profile]
        batch = Normaliser({device.profile: profile}, {}).registers(got.raws(device.profile)[0])
        assert not batch.deadletters, [d.detail for d in batch.deadletters]
        readings = {r.channel: r for r in batch.readings}
        expected = {v.channel: v.canonical for v in device.vectors if v.channel is not None}
        assert {s.channel for s in profile.registers} <= set(expected), f"{device.profile}: a read channel has no vector"
        for channel, value in expected.items():
            reading = readings.get(channel)
            if reading is None or reading.value != pytest.approx(value, rel=1e-6):
                wrong.append(f"{device.profile} {channel.value}: {reading and reading.value} != {value}")
        tampered = device.profile == "generic"
        assert {r.quality for r in batch.readings} == {Quality.TAMPER if tampered else Quality.NONE}, device.profile
    assert not wrong, "\n".join(wrong)
