"""Kept for one release: moved to drivers.polling.watchdog (protocol-neutral poll machinery)."""

from drivers.polling.watchdog import RequestWatchdog

__all__ = ["RequestWatchdog"]
