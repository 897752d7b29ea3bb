"""Token buckets that keep technicians' reads from flooding a Modbus bus.

A bus answers one request at a time, and the gateway's own polls share it; every 'poll now'
or raw read a person fires takes a slot from the schedule. One bucket per endpoint (per bus)
allows `burst` reads at once and `rate` per second after that, whoever asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `monotonic` is injected for tests."""

    __slots__ = ("_monotonic", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            msg = f"token bucket: need rate > 0 and burst >= 1, got rate {rate} and burst {burst}"
            raise ValueError(msg)
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._stamp = monotonic()

    def take(self) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available (none taken)."""
        now = self._monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class BusLimiter:
    """One TokenBucket per key (a Modbus endpoint name), made on first use."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        TokenBucket(rate, burst, monotonic)  # validates the settings now, not at the first read
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """0.0 if a read on `key` may go now, else the seconds to wait (the caller answers 429)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._monotonic)
        return bucket.take()


__all__ = ["BusLimiter", "TokenBucket"]
