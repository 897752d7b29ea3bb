"""Kept for one release: unit conversion moved to gateway.model.units (import it from there)."""

from gateway.model.units import conversion_factor

__all__ = ["conversion_factor"]
