"""Kept for one release: moved to drivers.polling.health (protocol-neutral poll machinery)."""

from drivers.polling.health import LATENCY_WINDOW, LatencyWindow, MeterHealth

__all__ = ["LATENCY_WINDOW", "LatencyWindow", "MeterHealth"]
