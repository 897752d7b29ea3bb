"""Simulated DLMS/COSEM meters over TCP (IEC 62056-47 wrapper): `meter-gateway simulate dlms`."""

from simulators.dlms.faults import FAULTS, parse_faults
from simulators.dlms.fleet import DlmsFleet, FleetOptions, SimMeter
from simulators.dlms.meter import DEFAULT_AK, DEFAULT_EK, DEFAULT_PASSWORD, Secrets, make_token

__all__ = ["DEFAULT_AK", "DEFAULT_EK", "DEFAULT_PASSWORD", "FAULTS", "DlmsFleet", "FleetOptions", "Secrets",
           "SimMeter", "make_token", "parse_faults"]
