"""Simulated Modbus energy meters behind pymodbus servers (TCP, RTU over TCP, serial), with faults set at run time.

Each simulated model serves its own register table (`datasheet`), transcribed from the
manufacturer's document, never the product's profile.
"""

from simulators.modbus.datasheet import Datasheet, datasheet_for, datasheets
from simulators.modbus.fleet import SimFleet
from simulators.modbus.meter import FAULTS, Fault, SimMeter
from simulators.modbus.network import SimNetwork

__all__ = ["FAULTS", "Datasheet", "Fault", "SimFleet", "SimMeter", "SimNetwork", "datasheet_for", "datasheets"]
