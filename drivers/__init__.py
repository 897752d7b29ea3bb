"""Stage 1: talk to devices. Emits only the types of drivers.samples."""

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
