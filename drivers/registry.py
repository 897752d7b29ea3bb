"""The drivers this build of the gateway runs: one line per protocol, the only door from the
runtime to them. `Gateway(config, profiles, drivers=DRIVERS)` takes it as an argument, so a test
(or another build) can run with other drivers without changing the tree."""

from __future__ import annotations

from collections.abc import Mapping

from drivers.base import DriverSpec
from drivers.dlms.spec import SPEC as DLMS
from drivers.mbus.spec import SPEC as MBUS
from drivers.modbus.spec import SPEC as MODBUS
from drivers.mqtt.spec import SPEC as MQTT
from drivers.obis_stream.spec import P1_SPEC as P1
from drivers.obis_stream.spec import SML_SPEC as SML

#: By protocol (meters[].protocol, the [<protocol>] section); the first is a meter's default.
DRIVERS: Mapping[str, DriverSpec] = {s.protocol: s for s in (MODBUS, MQTT, MBUS, P1, SML, DLMS)}

__all__ = ["DRIVERS"]
