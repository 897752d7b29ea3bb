"""Capped exponential backoff with jitter, for whoever owns a reconnect loop."""

from __future__ import annotations

import random


class Backoff:
    """Delays initial, initial*factor, ... capped at `maximum`, each spread by ±`jitter` (a fraction).

    `next()` returns the delay to wait before the next attempt; `reset()` after a success.
    """

    def __init__(
        self, initial: float, maximum: float, factor: float = 2.0, jitter: float = 0.1,
        *, rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            msg = f"Backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1; got {initial}, {maximum}, {factor}, {jitter}"
            raise ValueError(msg)
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self._current = initial

    def next(self) -> float:
        """The delay before the next attempt; each call grows the following one."""
        delay = self._current
        self._current = min(self._current * self.factor, self.maximum)
        return min(self.maximum, delay * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Start again from `initial` (call after a success)."""
        self._current = self.initial
