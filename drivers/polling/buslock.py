"""The lock of one bus, served by priority: healthy meters' polls before failing ones', and every
retry after both. Within a priority, first come, first served (as asyncio.Lock).

A bus answers one request at a time, so a poll holds it; when several wait, who goes next decides
whether a dead meter's timeout lands on a healthy meter's slot. Priorities: `HEALTHY` (0),
`FAILING` (1: the meter's last poll failed, its breaker is not closed, or it answers slowly),
`RETRY` (2: a request asked again after a timeout or a busy answer). A holder is never
preempted: the priority only orders the waiters. So that a dead meter's timeout does not start
just before a healthy meter's send (and run through its slot), `clear` (the poller's) says how
long until the bus is clear of healthy sends; a poll of lower priority handed the bus sooner
gives it back and waits that long.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

HEALTHY, FAILING, RETRY = 0, 1, 2


class BusLock:
    """An asyncio lock whose waiters are served lowest priority number first, then by arrival."""

    def __init__(self, clear: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clear = clear
        self._sleep = sleep
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    def locked(self) -> bool:
        return self._held

    async def acquire(self, priority: int = HEALTHY) -> None:
        while True:
            await self._acquire(priority)
            wait = 0.0 if priority == HEALTHY or self.clear is None else self.clear()
            if wait <= 0:
                return
            self.release()
            await self._sleep(wait)

    async def _acquire(self, priority: int) -> None:
        if not self._held:
            # Free means nobody waits: release hands the bus straight to the next waiter.
            self._held = True
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrival), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed the bus as the cancel came: pass it on
            # Otherwise its entry stays in the heap, done, and `release` skips it.
            raise

    def release(self) -> None:
        if not self._held:
            msg = "BusLock released while free"
            raise RuntimeError(msg)
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():
                granted.set_result(None)  # the bus stays held, by the waiter it goes to
                return
        self._held = False

    @asynccontextmanager
    async def hold(self, priority: int = HEALTHY) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


__all__ = ["FAILING", "HEALTHY", "RETRY", "BusLock"]
