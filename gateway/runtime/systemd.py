"""systemd integration: READY=1 at start, WATCHDOG=1 only while the pipeline moves.

The notify protocol is one datagram to $NOTIFY_SOCKET; ten lines do not earn a dependency.
Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 1e6 if usec and usec.isdigit() else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        address = self._address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("systemd notify %r failed: %s", message, exc)


class PipelineProgress:
    """Is the pipeline moving? Moving means: nothing waits, or something was processed
    since the last look. A queue that holds items while nothing gets processed is stuck."""

    def __init__(self, waiting: Callable[[], int], processed: Callable[[], int]) -> None:
        self._waiting = waiting
        self._processed = processed
        self._last = processed()

    def moving(self) -> bool:
        now = self._processed()
        moved = now != self._last or self._waiting() == 0
        self._last = now
        return moved


async def watchdog(notifier: Notifier, progress: PipelineProgress) -> None:
    """Ping systemd at half its watchdog interval while the pipeline moves; stay silent
    when it is stuck so systemd restarts the service."""
    if not notifier.enabled or notifier.watchdog_interval is None:
        return
    stuck_logged = False
    while True:
        await asyncio.sleep(notifier.watchdog_interval / 2)
        if progress.moving():
            notifier.notify("WATCHDOG=1")
            stuck_logged = False
        elif not stuck_logged:
            log.error("pipeline made no progress for %.0f s with work waiting; withholding the systemd watchdog ping",
                      notifier.watchdog_interval / 2)
            stuck_logged = True
