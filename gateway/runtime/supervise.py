"""Run a driver forever: restart it with backoff when it crashes, log each crash once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.backoff import Backoff

log = logging.getLogger(__name__)


async def supervise(name: str, run: Callable[[], Awaitable[None]], *, backoff: Backoff | None = None,
                    healthy_after: float = 30.0) -> None:
    """Call `run()` again whenever it raises; cancellation stops it.

    A driver contains its operational failures itself; reaching here means a bug or an
    unforeseen error, so it is logged with its traceback and the driver restarted.
    """
    backoff = backoff or Backoff(1.0, 60.0)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await run()
            log.warning("driver %s stopped by itself; restarting", name)
        except Exception:
            log.exception("driver %s crashed; restarting", name)
        if loop.time() - started > healthy_after:
            backoff.reset()
        await asyncio.sleep(backoff.next())
