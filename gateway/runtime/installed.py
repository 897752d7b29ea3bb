"""The meters' installation floors, kept in step with the registry.

The account system sets a meter's `installed_at` through the API (`PATCH /v1/meters/{id}`), in
the store; under `meter-gateway run` the API is another process, so the core is not told. It reads
the dates of its meters when the store is ready, before any driver runs (`refresh`, from the store
keeper), then every `[plausibility] installed_refresh` seconds (`run`): a date set or moved takes
effect within that time. A meter's floor is the later of the registry's date and its `[[meters]]
installed_at`: either says its data cannot start before it, so the stricter holds.

The normaliser's Bounds never change: when the floors do, a new one (over a read-only mapping) is
swapped in whole, so a sample is judged against one set of dates. A store that does not answer
keeps the floors read last, said once per outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from gateway.errors import SinkError
from gateway.normalise.normaliser import Normaliser

log = logging.getLogger(__name__)
#: Meters a log line names when their floors change; beyond, it counts them.
SHOWN = 5


class Dates(Protocol):
    """What the floors need of a store (storage.base.Registry)."""

    async def installation_dates(self, meter_ids: Sequence[str]) -> dict[str, datetime]: ...


def later(configured: Mapping[str, datetime], registry: Mapping[str, datetime]) -> dict[str, datetime]:
    """Each meter's floor: the later of its configured and its registry installation date."""
    out = dict(configured)
    for meter, at in registry.items():
        if meter not in out or at > out[meter]:
            out[meter] = at
    return out


class InstallationFloors:
    """Keeps `normaliser.bounds.installed` the later of the configured dates (those it holds when
    this is built) and the registry's for `meter_ids`."""

    def __init__(self, normaliser: Normaliser, meter_ids: Iterable[str], every: float) -> None:
        self.normaliser = normaliser
        self.every = every
        self._meter_ids = list(meter_ids)
        self._configured = dict(normaliser.bounds.installed)
        #: The registry's dates as last read (empty until the first read).
        self.registry: Mapping[str, datetime] = MappingProxyType({})
        self._failing = False

    async def refresh(self, store: Dates) -> bool:
        """Read the registry's dates and swap the floors in if they changed; False if the store did
        not answer (the floors stay)."""
        try:
            found = await store.installation_dates(self._meter_ids)
        except (SinkError, OSError) as exc:
            if not self._failing:
                log.warning("installation dates not read from the store (%s); the floors read last stay, "
                            "tried again every %g s", exc, self.every)
            self._failing = True
            return False
        if self._failing:
            log.info("installation dates read from the store again")
        self._failing = False
        self.registry = MappingProxyType(dict(found))
        self.apply(later(self._configured, found))
        return True

    def apply(self, floors: Mapping[str, datetime]) -> None:
        bounds = self.normaliser.bounds
        if floors == bounds.installed:
            return
        changed = sorted(m for m in floors.keys() | bounds.installed.keys() if floors.get(m) != bounds.installed.get(m))
        shown = ", ".join(f"{m} {_iso(floors.get(m))} (was {_iso(bounds.installed.get(m))})" for m in changed[:SHOWN])
        more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
        log.info("installation floors changed: %s%s; nothing a meter measured before its floor is data", shown, more)
        self.normaliser.bounds = replace(bounds, installed=MappingProxyType(floors))

    async def run(self, store: Dates, ready: asyncio.Event) -> None:
        """Every `every` seconds once `ready` is set (the store keeper read them once by then)."""
        await ready.wait()
        while True:
            await asyncio.sleep(self.every)
            await self.refresh(store)


def _iso(at: datetime | None) -> str:
    return "none" if at is None else at.isoformat()


__all__ = ["SHOWN", "Dates", "InstallationFloors", "later"]
