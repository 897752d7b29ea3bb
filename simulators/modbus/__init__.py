"""Simulated Modbus energy meters behind one pymodbus TCP server, with faults set at run time."""

from simulators.modbus.fleet import SimFleet
from simulators.modbus.meter import FAULTS, Fault, SimMeter

__all__ = ["FAULTS", "Fault", "SimFleet", "SimMeter"]
