"""Modbus TCP (and RTU over TCP) driver: poll meters, emit RawRegisters / PollFailure / Event.

Only `drivers.modbus.connection` imports pymodbus; nothing outside drivers/ needs to.
"""

from drivers.modbus.connection import ModbusConnection, ModbusEndpoint
from drivers.modbus.plan import ReadBlock, plan_reads
from drivers.modbus.poller import Emit, MeterHealth, ModbusPoller, PollTarget

__all__ = [
    "Emit",
    "MeterHealth",
    "ModbusConnection",
    "ModbusEndpoint",
    "ModbusPoller",
    "PollTarget",
    "ReadBlock",
    "plan_reads",
]
