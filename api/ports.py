"""What the API needs from the running gateway (implemented by gateway.runtime)."""

from __future__ import annotations

from typing import Any, Protocol


class GatewayPort(Protocol):
    def readiness(self) -> dict[str, Any]:
        """{'ready': bool, 'checks': {name: {'ok': bool, 'detail': str}}, 'storage_mode': str}"""

    def status(self) -> dict[str, Any]:
        """Gateway status for technicians: drivers, spool, sink, counters, version, uptime."""
