"""MQTT driver: a persistent-session, manual-ack subscriber for PAYG meters (paho-mqtt 2.x)."""

from drivers.mqtt.connection import MqttConnection, MqttMessage, MqttSettings
from drivers.mqtt.subscriber import MqttSubscriber, TopicTemplate

__all__ = ["MqttConnection", "MqttMessage", "MqttSettings", "MqttSubscriber", "TopicTemplate"]
