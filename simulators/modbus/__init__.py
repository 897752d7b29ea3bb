"""Simulated Modbus energy meters behind pymodbus servers (TCP, RTU over TCP, serial), with faults set at run time."""

from simulators.modbus.fleet import SimFleet
from simulators.modbus.meter import FAULTS, Fault, SimMeter
from simulators.modbus.network import SimNetwork

__all__ = ["FAULTS", "Fault", "SimFleet", "SimMeter", "SimNetwork"]
