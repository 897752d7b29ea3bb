"""A time limit on the request in flight on one connection, with one lazily re-armed timer.

`asyncio.timeout` around every request puts a timer on the event loop's heap per request and
takes it off again: at a thousand meters a second, two per poll, a noticeable part of the
gateway's CPU for a limit that almost never fires (pymodbus times requests out itself; this
is the safety net should it hang). A connection sends one request at a time (its lock), so
one timer serves them all: armed for the request in flight, it re-arms itself for the
deadline of whichever request is in flight when it fires, and disarms when none is. Expiry
works as in `asyncio.timeout`: the task is cancelled, and the cancellation comes out of the
`with` block as TimeoutError (a cancel from elsewhere stays a cancel).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class RequestWatchdog:
    """`with watchdog:` around one awaited request at a time; TimeoutError after `limit` s."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_handle", "_loop", "_task", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop _handle is on
        self._task: asyncio.Task[object] | None = None
        self._deadline = 0.0
        self._cancelling = 0
        self._expired = False

    def __enter__(self) -> RequestWatchdog:
        task = asyncio.current_task()
        if task is None or self._task is not None:
            msg = "RequestWatchdog guards one request at a time, inside a task"
            raise RuntimeError(msg)
        loop = task.get_loop()
        self._task, self._cancelling, self._expired = task, task.cancelling(), False
        self._deadline = loop.time() + self.limit
        if self._handle is None or self._loop is not loop:
            self._handle, self._loop = loop.call_at(self._deadline, self._fire), loop
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, expired = self._task, self._expired
        self._task, self._expired = None, False
        if expired and task is not None and task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def close(self) -> None:
        """Disarm the timer (the connection is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None or self._expired:
            return  # nothing in flight: the next request arms the timer again
        loop = task.get_loop()
        if loop.time() >= self._deadline:
            self._expired = True
            task.cancel()
        else:
            self._handle = loop.call_at(self._deadline, self._fire)
