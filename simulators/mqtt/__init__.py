"""Simulated PAYG meters publishing balance updates over MQTT and answering commands."""

from simulators.mqtt.meter import SimPaygMeter
from simulators.mqtt.payg import BAD_PAYLOAD_FAULTS, FAULTS, PaygFleet
from simulators.mqtt.publisher import Incoming, PaygPublisher, TlsFiles, publish_balance, to_json

__all__ = [
    "BAD_PAYLOAD_FAULTS",
    "FAULTS",
    "Incoming",
    "PaygFleet",
    "PaygPublisher",
    "SimPaygMeter",
    "TlsFiles",
    "publish_balance",
    "to_json",
]
