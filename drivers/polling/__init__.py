"""Protocol-neutral poll machinery: a slot per meter, a circuit breaker, a time limit on the request in
flight, and the health a polled meter shows. Modbus uses it; a DLMS client or an M-Bus master needs
exactly this, so none of it knows a wire protocol."""

from drivers.polling.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from drivers.polling.health import LATENCY_WINDOW, LatencyWindow, MeterHealth, health_dict
from drivers.polling.schedule import Schedule, Slot, send_offset
from drivers.polling.watchdog import RequestWatchdog

__all__ = [
    "LATENCY_WINDOW",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "LatencyWindow",
    "MeterHealth",
    "RequestWatchdog",
    "Schedule",
    "Slot",
    "health_dict",
    "send_offset",
]
