"""Per-meter circuit breaker: a meter that keeps failing stops costing bus time.

closed -> (N failures in a row) -> open -> (cool-down passed) -> half_open: one probe poll
-> success: closed; failure: open again with a longer cool-down (doubling, jittered, capped).
Pure: the caller hands in monotonic times.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.backoff import Backoff


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Open after `failures` failed polls in a row; stay open `cooldown` s, doubling up to `max_cooldown`."""

    failures: int = 5
    cooldown: float = 10.0
    max_cooldown: float = 300.0

    def __post_init__(self) -> None:
        if self.failures < 1 or not 0 < self.cooldown <= self.max_cooldown:
            msg = f"breaker: need failures >= 1 and 0 < cooldown <= max_cooldown, got {self}"
            raise ValueError(msg)


class CircuitBreaker:
    """Decides whether a meter's next scheduled poll goes on the bus."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.opened = 0  # times the breaker opened, for diagnostics
        self._cooldown = Backoff(self.policy.cooldown, self.policy.max_cooldown, jitter=0.1)

    def allow(self, now: float) -> bool:
        """True if a poll may be sent now; an open breaker lets one probe through after its cool-down."""
        if self.state is BreakerState.OPEN:
            if now < self.open_until:
                return False
            self.state = BreakerState.HALF_OPEN
        return True

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._cooldown.reset()

    def failure(self, now: float) -> bool:
        """Record a failed poll; return True if this opened the breaker."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.policy.failures
        ):
            self.state = BreakerState.OPEN
            self.open_until = now + self._cooldown.next()
            self.opened += 1
            return True
        return False
