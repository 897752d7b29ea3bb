"""What diagnostics, metrics and the command desk read of a running gateway: a Protocol `Gateway`
satisfies.

`diag.py`, `metrics.py` and `commands.py` take a `GatewayView`, not the `Gateway` class, so the
composition root imports them and they import nothing back: the runtime has no import cycle (an
annotation under TYPE_CHECKING would still be one for the import contract).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from drivers.base import Driver, DriverSpec, MeterFacts, MeterHealth
from gateway.config.schema import GatewayConfig
from gateway.runtime.health import HealthBook
from gateway.runtime.pipeline import Pipeline
from storage.base import Store
from storage.spool import Spool
from storage.spool.forwarder import Forwarder


class GatewayView(Protocol):
    """The running gateway's state, read-only (attributes are None until their stage started)."""

    @property
    def config(self) -> GatewayConfig: ...
    @property
    def config_path(self) -> Path | None: ...
    @property
    def config_hash(self) -> str | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def store_ready(self) -> asyncio.Event: ...
    @property
    def migrated(self) -> bool: ...
    @property
    def spool(self) -> Spool | None: ...
    @property
    def forwarder(self) -> Forwarder | None: ...
    @property
    def pipeline(self) -> Pipeline | None: ...
    @property
    def health(self) -> HealthBook: ...
    @property
    def registry(self) -> Mapping[str, DriverSpec]:
        """The driver specs this gateway runs, by protocol."""
        ...
    @property
    def drivers(self) -> Sequence[Driver]:
        """The drivers built from them (empty until the gateway runs)."""
        ...
    @property
    def facts(self) -> Mapping[str, MeterFacts]:
        """Every configured meter's facts, by meter id."""
        ...

    def drivers_of(self, protocol: str) -> Sequence[Driver]: ...

    def driver_for(self, meter_id: str) -> Driver | None:
        """The driver that serves a meter (None: not configured, or not served: inactive)."""
        ...

    def driver_health(self) -> dict[str, MeterHealth]:
        """Every polled meter's driver health, by meter id."""
        ...


__all__ = ["GatewayView"]
