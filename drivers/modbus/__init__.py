"""Modbus driver (TCP, RTU over TCP, serial RTU): poll meters, emit RawRegisters / PollFailure / Event.

Only `drivers.modbus.connection` imports pymodbus; nothing outside drivers/ needs to.
"""

from drivers.modbus.connection import ConnectionStats, ModbusConnection, ModbusEndpoint, SerialLine, Transport
from drivers.modbus.plan import ReadBlock, plan_reads
from drivers.modbus.poller import Emit, ModbusPoller, PollTarget
from drivers.polling.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from drivers.polling.health import MeterHealth
from drivers.polling.schedule import Schedule, Slot, send_offset

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "ConnectionStats",
    "Emit",
    "MeterHealth",
    "ModbusConnection",
    "ModbusEndpoint",
    "ModbusPoller",
    "PollTarget",
    "ReadBlock",
    "Schedule",
    "SerialLine",
    "Slot",
    "Transport",
    "plan_reads",
    "send_offset",
]
