"""The core process's side of `meter-gateway run` (its control socket: Gateway._control_calls).

The API process asks for what only the core knows (gateway.runtime.remote); the supervisor
reports the processes it restarted, which the core counts in /metrics
(`meter_gateway_process_restarts_total{process}`) and raises as `process_restarted` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from gateway.model import Batch, Event, EventKind
from gateway.model.events import Severity
from gateway.runtime.health import HealthBook
from gateway.runtime.metrics import GatewayMetrics
from storage.spool import Spool

log = logging.getLogger(__name__)


class ProcessBook:
    """Restarts as the supervisor counts them: totals since `meter-gateway run` started (sent again
    to a core that was itself restarted, so the counter never goes back), and the restarts not yet
    raised as events."""

    def __init__(self, metrics: GatewayMetrics, health: HealthBook, spool: Callable[[], Spool | None]) -> None:
        self.metrics = metrics
        self.health = health
        self.spool = spool
        self.counted: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, totals: Mapping[str, int], restarts: Sequence[tuple[str, str, float]]) -> None:
        metric = self.metrics.process_restarts
        for process, total in totals.items():
            more = total - self.counted.get(process, 0)
            if more > 0:
                metric.labels(process).inc(more)
                self.counted[process] = total
        for process, detail, at in restarts:
            event = Event(datetime.fromtimestamp(at, UTC), None, EventKind.PROCESS_RESTARTED, Severity.WARNING,
                          f"the {process} process {detail}; restarted")
            self.health.observe((), Batch(events=[event]))
            self.metrics.events.labels(event.kind.value).inc()
            # Stored through the spool like every event, without holding the supervisor's call
            # while the spool is busy (or blocked by a full disk).
            task = asyncio.create_task(self._store(event), name="process-event")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _store(self, event: Event) -> None:
        spool = self.spool()
        if spool is not None:
            await spool.append(Batch(events=[event]))


async def hello(store_ready: asyncio.Event, intervals: Callable[[], dict[str, float]],
                commands: Callable[[], bool]) -> dict[str, object]:
    """The API process's first call: the facts fixed by the configuration, once the store is migrated
    (or 5 s have passed: a store that is down only delays the API's data routes, which say 503)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(store_ready.wait(), timeout=5.0)
    return {"poll_intervals": intervals(), "commands_available": commands()}
