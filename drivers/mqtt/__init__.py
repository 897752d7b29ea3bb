"""MQTT driver: a persistent-session, manual-ack subscriber for PAYG meters (paho-mqtt 2.x),
and the command path to those meters (top-up, disconnect, reconnect)."""

from drivers.mqtt.commands import CommandSettings, CommandTracker
from drivers.mqtt.connection import MqttConnection, MqttMessage, MqttSettings
from drivers.mqtt.subscriber import MqttSubscriber
from drivers.mqtt.topics import TopicTemplate

__all__ = [
    "CommandSettings",
    "CommandTracker",
    "MqttConnection",
    "MqttMessage",
    "MqttSettings",
    "MqttSubscriber",
    "TopicTemplate",
]
