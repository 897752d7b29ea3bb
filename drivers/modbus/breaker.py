"""Kept for one release: moved to drivers.polling.breaker (protocol-neutral poll machinery)."""

from drivers.polling.breaker import BreakerPolicy, BreakerState, CircuitBreaker

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]
