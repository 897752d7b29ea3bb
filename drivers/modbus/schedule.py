"""Kept for one release: moved to drivers.polling.schedule (protocol-neutral poll machinery)."""

from drivers.polling.schedule import Schedule, Slot, send_offset

__all__ = ["Schedule", "Slot", "send_offset"]
