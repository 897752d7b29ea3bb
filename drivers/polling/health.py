"""What technicians see of one polled meter: attempts, successes, errors, latencies, raw words."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from gateway.model.samples import RegisterBlock

#: Latencies kept per meter for the percentiles: the last few minutes of a 1 s meter,
#: the last few days of a 15-minute one.
LATENCY_WINDOW = 256


@dataclass(slots=True)
class MeterHealth:
    """What diagnostics show of one meter; updated on every poll. `health()` hands out copies."""

    meter_id: str
    unit: int
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_latency_s: float | None = None
    #: Percentiles of the on-the-wire time of the last LATENCY_WINDOW successful polls.
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    polls: int = 0  # attempts, failed ones included
    failures: int = 0
    skipped: int = 0  # slots missed because the previous poll was still running (overruns)
    breaker: str = "closed"  # closed | open | half_open
    breaker_skips: int = 0  # slots not polled because the breaker was open
    last_raw: tuple[RegisterBlock, ...] = ()
    comm_lost: bool = False


class LatencyWindow:
    """The last `size` latencies of one meter and their percentiles."""

    __slots__ = ("_values",)

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentiles(self, *qs: float) -> tuple[float | None, ...]:
        """Nearest-rank percentiles (each q in 0..100); None before the first sample."""
        if not self._values:
            return tuple(None for _ in qs)
        ordered = sorted(self._values)
        n = len(ordered)
        return tuple(ordered[max(0, min(n - 1, math.ceil(q / 100 * n) - 1))] for q in qs)


def health_dict(h: MeterHealth) -> dict[str, Any]:
    """A meter's health as /v1/diag/status shows it per meter (datetimes in ISO 8601, no raw words)."""
    # Field by field, not dataclasses.asdict: that deep-copies last_raw, for thousands of meters.
    values = ((f.name, getattr(h, f.name)) for f in fields(h) if f.name != "last_raw")
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values}


__all__ = ["LATENCY_WINDOW", "LatencyWindow", "MeterHealth", "health_dict"]
