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
F64 = DataType.FLOAT64
_WORDS = {F32: 2, F64: 4, I16: 1, U16: 1, I32: 2, U32: 2, I64: 4, U64: 4}


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
    # The register maps below are written from the public transcriptions each profile names
    # (volkszaehler/mbmd, OpenEMS, the Schneider PM5100 script, the CALEC ST manual page).
    # Eastron SDM72D-M (v1) manual: input registers, float32; no volts, amps or hertz.
    6: Device("sdm72dm", "input", 30001, (
        V(30053, F32, 2750.0, Channel.POWER, 2.75), V(30073, F32, 4567.8, Channel.ENERGY_IMPORT, 4567.8),
        V(30075, F32, 12.3, Channel.ENERGY_EXPORT, 12.3), V(30343, F32, 4580.1),  # total kWh, import + export
    )),
    # Eastron SDM72D-M-2 manual: input registers, float32, the SDM630's addresses.
    7: Device("sdm72dm_v2", "input", 30001, (
        V(30001, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(30003, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(30005, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(30007, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(30009, F32, 4.5, Channel.CURRENT_L2, 4.5), V(30011, F32, 3.75, Channel.CURRENT_L3, 3.75),
        V(30013, F32, 1100.0), V(30053, F32, 2750.0, Channel.POWER, 2.75),
        V(30063, F32, 0.93, Channel.POWER_FACTOR, 0.93), V(30071, F32, 49.98, Channel.FREQUENCY, 49.98),
        V(30073, F32, 4567.8, Channel.ENERGY_IMPORT, 4567.8), V(30075, F32, 12.3, Channel.ENERGY_EXPORT, 12.3),
        V(30343, F32, 4580.1), V(30345, F32, 99.9),  # total kWh, total kVArh
    )),
    # Eastron SDM230 register table: input registers, float32.
    8: Device("sdm230", "input", 30001, (
        V(30001, F32, 231.7, Channel.VOLTAGE_L1, 231.7), V(30007, F32, 7.5, Channel.CURRENT_L1, 7.5),
        V(30013, F32, -1650.5, Channel.POWER, -1.6505), V(30019, F32, 1700.0),
        V(30031, F32, -0.97, Channel.POWER_FACTOR, -0.97), V(30071, F32, 50.01, Channel.FREQUENCY, 50.01),
        V(30073, F32, 789.1, Channel.ENERGY_IMPORT, 789.1), V(30075, F32, 2345.6, Channel.ENERGY_EXPORT, 2345.6),
    )),
    # ABB B21 (B-series manual): holding registers, big endian, the B23's L1 registers.
    9: Device("abb_b21", "holding", 0, (
        V(0x5000, U64, 1234560, Channel.ENERGY_IMPORT, 12345.6), V(0x5004, U64, 32110, Channel.ENERGY_EXPORT, 321.1),
        V(0x5B00, U32, 2298, Channel.VOLTAGE_L1, 229.8), V(0x5B0C, U32, 525, Channel.CURRENT_L1, 5.25),
        V(0x5B14, I32, 185000, Channel.POWER, 1.85), V(0x5B2C, U16, 5002, Channel.FREQUENCY, 50.02),
        V(0x5B3A, I16, 930, Channel.POWER_FACTOR, 0.93),
    )),
    # Carlo Gavazzi EM330/EM340/ET330/ET340 protocol: input registers, INT32 least significant word first.
    10: Device("cg_em340", "input", 0, (
        V(0x00, I32, 2298, Channel.VOLTAGE_L1, 229.8, True), V(0x02, I32, 2312, Channel.VOLTAGE_L2, 231.2, True),
        V(0x04, I32, 2304, Channel.VOLTAGE_L3, 230.4, True), V(0x0C, I32, 5250, Channel.CURRENT_L1, 5.25, True),
        V(0x0E, I32, 4500, Channel.CURRENT_L2, 4.5, True), V(0x10, I32, 3750, Channel.CURRENT_L3, 3.75, True),
        V(0x12, I32, 6000, lsw_first=True), V(0x28, I32, -18500, Channel.POWER, -1.85, True),
        V(0x2E, I16, 910), V(0x31, I16, 930, Channel.POWER_FACTOR, 0.93), V(0x33, I16, 500, Channel.FREQUENCY, 50.0),
        V(0x34, I32, 123456, Channel.ENERGY_IMPORT, 12345.6, True), V(0x40, I32, 41152, lsw_first=True),
        V(0x4E, I32, 3211, Channel.ENERGY_EXPORT, 321.1, True),
    )),
    11: Device("cg_et340", "input", 0, (
        V(0x00, I32, 2401, Channel.VOLTAGE_L1, 240.1, True), V(0x02, I32, 2395, Channel.VOLTAGE_L2, 239.5, True),
        V(0x04, I32, 2413, Channel.VOLTAGE_L3, 241.3, True), V(0x0C, I32, 11500, Channel.CURRENT_L1, 11.5, True),
        V(0x0E, I32, 250, Channel.CURRENT_L2, 0.25, True), V(0x10, I32, 16000, Channel.CURRENT_L3, 16.0, True),
        V(0x28, I32, 27500, Channel.POWER, 2.75, True), V(0x31, I16, -970, Channel.POWER_FACTOR, -0.97),
        V(0x33, I16, 501, Channel.FREQUENCY, 50.1), V(0x34, I32, 75, Channel.ENERGY_IMPORT, 7.5, True),
        V(0x4E, I32, 987654, Channel.ENERGY_EXPORT, 98765.4, True),
    )),
    # Schneider iEM3100/3200/3300 manual DOCA0005, register list: holding, 1-based, float32, energy INT64 Wh.
    12: Device("iem3x55", "holding", 1, (
        V(3000, F32, 5.25, Channel.CURRENT_L1, 5.25), V(3002, F32, 4.5, Channel.CURRENT_L2, 4.5),
        V(3004, F32, 3.75, Channel.CURRENT_L3, 3.75), V(3010, F32, 4.5),  # average current
        V(3028, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(3030, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(3032, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(3060, F32, 1.85, Channel.POWER, 1.85),
        V(3110, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(3204, I64, 12345600, Channel.ENERGY_IMPORT, 12345.6), V(3208, I64, 321100, Channel.ENERGY_EXPORT, 321.1),
    )),
    # Schneider PM5100/PM5300 register list: holding, 1-based, float32, energy INT64 Wh.
    13: Device("pm5xxx", "holding", 1, (
        V(3000, F32, 52.5, Channel.CURRENT_L1, 52.5), V(3002, F32, 45.0, Channel.CURRENT_L2, 45.0),
        V(3004, F32, 37.5, Channel.CURRENT_L3, 37.5), V(3020, F32, 399.5),  # V L1-L2
        V(3028, F32, 230.7, Channel.VOLTAGE_L1, 230.7), V(3030, F32, 229.9, Channel.VOLTAGE_L2, 229.9),
        V(3032, F32, 231.0, Channel.VOLTAGE_L3, 231.0), V(3060, F32, 29.5, Channel.POWER, 29.5),
        V(3110, F32, 49.99, Channel.FREQUENCY, 49.99), V(3204, U64, 987654321, Channel.ENERGY_IMPORT, 987654.321),
    )),
    # Janitza UMG 604 address list: holding, float32; energy in Wh.
    14: Device("janitza_umg604", "holding", 0, (
        V(1317, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(1319, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(1321, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(1325, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(1327, F32, 4.5, Channel.CURRENT_L2, 4.5), V(1329, F32, 3.75, Channel.CURRENT_L3, 3.75),
        V(1333, F32, -600.0), V(1369, F32, -1850.0, Channel.POWER, -1.85), V(1371, F32, 310.0),
        V(1439, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(9851, F32, 12345600.0, Channel.ENERGY_IMPORT, 12345.6), V(9863, F32, 321100.0, Channel.ENERGY_EXPORT, 321.1),
    )),
    # Janitza UMG 96RM-E address list: holding, float32 19000-19076; energy in Wh.
    15: Device("janitza_umg96rm", "holding", 0, (
        V(19000, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(19002, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(19004, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(19012, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(19014, F32, 4.5, Channel.CURRENT_L2, 4.5), V(19016, F32, 3.75, Channel.CURRENT_L3, 3.75),
        V(19018, F32, 13.5), V(19026, F32, 1850.0, Channel.POWER, 1.85), V(19050, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(19068, F32, 12345600.0, Channel.ENERGY_IMPORT, 12345.6), V(19076, F32, 321100.0, Channel.ENERGY_EXPORT, 321.1),
    )),
    # Socomec COUNTIS E2x Modbus table: holding, 32-bit big endian; V 0.01, Hz 0.001, A 0.001, kW 0.01, kWh 0.01.
    16: Device("socomec_countis_e2x", "holding", 0, (
        V(0xC558, U32, 22980, Channel.VOLTAGE_L1, 229.8), V(0xC55A, U32, 23120, Channel.VOLTAGE_L2, 231.2),
        V(0xC55C, U32, 23040, Channel.VOLTAGE_L3, 230.4), V(0xC55E, U32, 50020, Channel.FREQUENCY, 50.02),
        V(0xC560, U32, 5250, Channel.CURRENT_L1, 5.25), V(0xC562, U32, 4500, Channel.CURRENT_L2, 4.5),
        V(0xC564, U32, 3750, Channel.CURRENT_L3, 3.75), V(0xC568, I32, -185, Channel.POWER, -1.85),
        V(0xC56A, I32, 31), V(0xC702, U32, 1234560, Channel.ENERGY_IMPORT, 12345.6),
        V(0xC708, U32, 32110, Channel.ENERGY_EXPORT, 321.1),
    )),
    # Finder Modbus 7M24-7M38 v2: input registers, float32; energy in Wh.
    17: Device("finder_7m38", "input", 0, (
        V(2500, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(2502, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(2504, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(2516, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(2518, F32, 4.5, Channel.CURRENT_L2, 4.5), V(2520, F32, 3.75, Channel.CURRENT_L3, 3.75),
        V(2530, F32, 700.0), V(2536, F32, 1850.0, Channel.POWER, 1.85), V(2560, F32, 0.93, Channel.POWER_FACTOR, 0.93),
        V(2584, F32, 50.02, Channel.FREQUENCY, 50.02), V(2752, F32, 12345600.0, Channel.ENERGY_IMPORT, 12345.6),
        V(2754, F32, 3703700.0), V(2756, F32, 321100.0, Channel.ENERGY_EXPORT, 321.1),
    )),
    # Inepro PRO380 manual V2.18: holding, float32; power in kW, energy in kWh.
    18: Device("inepro_pro380", "holding", 0, (
        V(0x5000, F32, 230.5), V(0x5002, F32, 229.8, Channel.VOLTAGE_L1, 229.8),
        V(0x5004, F32, 231.2, Channel.VOLTAGE_L2, 231.2), V(0x5006, F32, 230.4, Channel.VOLTAGE_L3, 230.4),
        V(0x5008, F32, 50.02, Channel.FREQUENCY, 50.02), V(0x500C, F32, 5.25, Channel.CURRENT_L1, 5.25),
        V(0x500E, F32, 4.5, Channel.CURRENT_L2, 4.5), V(0x5010, F32, 3.75, Channel.CURRENT_L3, 3.75),
        V(0x5012, F32, -1.85, Channel.POWER, -1.85), V(0x502A, F32, 0.93, Channel.POWER_FACTOR, 0.93),
        V(0x6000, F32, 12666.7), V(0x600C, F32, 12345.6, Channel.ENERGY_IMPORT, 12345.6),
        V(0x6018, F32, 321.1, Channel.ENERGY_EXPORT, 321.1),
    )),
    # ORNO OR-WE-516/517 register description: holding, float32; power in kW.
    19: Device("orno_we516", "holding", 0, (
        V(0x0E, F32, 229.8, Channel.VOLTAGE_L1, 229.8), V(0x10, F32, 231.2, Channel.VOLTAGE_L2, 231.2),
        V(0x12, F32, 230.4, Channel.VOLTAGE_L3, 230.4), V(0x14, F32, 50.02, Channel.FREQUENCY, 50.02),
        V(0x16, F32, 5.25, Channel.CURRENT_L1, 5.25), V(0x18, F32, 4.5, Channel.CURRENT_L2, 4.5),
        V(0x1A, F32, 3.75, Channel.CURRENT_L3, 3.75), V(0x1C, F32, 1.85, Channel.POWER, 1.85),
        V(0x1E, F32, 0.7), V(0x34, F32, 0.93, Channel.POWER_FACTOR, 0.93), V(0x100, F32, 12666.7),
        V(0x108, F32, 12345.6, Channel.ENERGY_IMPORT, 12345.6), V(0x110, F32, 321.1, Channel.ENERGY_EXPORT, 321.1),
    )),
    # ORNO OR-WE-514/515 register description: holding, big-endian integers; one counter (total).
    20: Device("orno_we514", "holding", 0, (
        V(0x130, U16, 5002, Channel.FREQUENCY, 50.02), V(0x131, U16, 22980, Channel.VOLTAGE_L1, 229.8),
        V(0x139, U32, 5250, Channel.CURRENT_L1, 5.25), V(0x140, U32, 1850, Channel.POWER, 1.85),
        V(0x148, U32, 310), V(0x158, U16, 930, Channel.POWER_FACTOR, 0.93),
        V(0xA000, U32, 1234560, Channel.ENERGY_IMPORT, 12345.6), V(0xA01E, U32, 370370),
    )),
    # Aquametro CALEC ST Modbus register page: holding (assumed), float32; device type at 0.
    21: Device("aquametro_calec_st", "holding", 0, (
        V(0, U16, 0xC0), V(100, F32, 8765.4, Channel.HEAT_ENERGY, 8765.4), V(104, U16, 0),
        V(200, F32, 1234.567, Channel.VOLUME, 1234.567), V(204, U16, 1), V(500, F32, 12.5, Channel.POWER, 12.5),
        V(502, U16, 1), V(600, F32, 1.25, Channel.FLOW, 1.25), V(602, U16, 2),
    )),
    # meter-gateway generic time-of-use map v1 (issue 24): input registers, float64 big-endian.
    22: Device("generic_tou", "input", 0, (
        V(0, F64, 4321.5, Channel.ENERGY_IMPORT, 4321.5), V(4, F64, 12.25, Channel.ENERGY_EXPORT, 12.25),
        V(8, F64, 1.75, Channel.POWER, 1.75), V(12, F64, 2592.9, Channel.ENERGY_IMPORT_T1, 2592.9),
        V(16, F64, 1728.6, Channel.ENERGY_IMPORT_T2, 1728.6), V(20, F64, 7.35, Channel.ENERGY_EXPORT_T1, 7.35),
        V(24, F64, 4.9, Channel.ENERGY_EXPORT_T2, 4.9),
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
