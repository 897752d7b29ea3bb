"""Simulated PAYG meters publishing balance updates over MQTT."""

from simulators.mqtt.payg import FAULTS, PaygFleet, PaygPublisher, SimPaygMeter, publish_balance

__all__ = ["FAULTS", "PaygFleet", "PaygPublisher", "SimPaygMeter", "publish_balance"]
