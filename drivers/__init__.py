"""Stage 1: talk to devices. Each protocol plugs in through drivers.base (the contract) and one line
in drivers.registry; drivers emit the samples of gateway.model.samples.

The names below are kept for one release for old imports; a new driver adds nothing here.
"""

from drivers.modbus import MeterHealth, ModbusEndpoint, ModbusPoller, PollTarget
from drivers.mqtt import MqttSettings, MqttSubscriber
from gateway.model.samples import PollFailure, RawPayload, RawRegisters, RegisterBlock

__all__ = [
    "MeterHealth",
    "ModbusEndpoint",
    "ModbusPoller",
    "MqttSettings",
    "MqttSubscriber",
    "PollFailure",
    "PollTarget",
    "RawPayload",
    "RawRegisters",
    "RegisterBlock",
]
