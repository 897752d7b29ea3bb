"""SimNetwork: a meter network of several RS-485 gateways, one SimFleet (one port) each.

Meters M-0001..M-N are dealt to the endpoints in blocks (endpoint 1 gets the first
ceil(N/E) meters, on unit ids 1..), as an installer wires consecutive meters to one bus.
"""

from __future__ import annotations

import math
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from gateway.model.profiles import DeviceProfile
from simulators.modbus.fleet import SimFleet
from simulators.modbus.meter import Fault, SimMeter


class SimNetwork:
    """`n_meters` simulated meters spread over `endpoints` servers; `fleet_kw` go to each SimFleet.

    Endpoint k (0-based) listens on `port + k`, or on a free port when `port` is 0.
    """

    def __init__(
        self, profile: DeviceProfile, n_meters: int, *, endpoints: int = 1, seed: int = 1,
        start: datetime | None = None, port: int = 0, **fleet_kw: Any,
    ) -> None:
        if endpoints < 1 or n_meters < endpoints or math.ceil(n_meters / endpoints) > 247:
            msg = (f"simulator: {n_meters} meters on {endpoints} endpoint(s) needs 1..247 meters per endpoint "
                   f"and at least one per endpoint")
            raise ValueError(msg)
        per = math.ceil(n_meters / endpoints)
        ids = [f"M-{i:04d}" for i in range(1, n_meters + 1)]
        chunks = [ids[i : i + per] for i in range(0, n_meters, per)]
        self.profile = profile
        self.fleets = [
            SimFleet(profile, len(chunk), seed=seed, meter_ids=chunk, start=start, port=port + k if port else 0,
                     **fleet_kw)
            for k, chunk in enumerate(chunks)
        ]
        self._where = {m: (fleet, unit) for fleet in self.fleets for unit, m in
                       ((u, meter.meter_id) for u, meter in fleet.meters.items())}

    @property
    def meter_ids(self) -> list[str]:
        return list(self._where)

    def locate(self, meter_id: str) -> tuple[SimFleet, int]:
        """The fleet (endpoint) and unit id of a meter."""
        return self._where[meter_id]

    def meter(self, meter_id: str) -> SimMeter:
        fleet, unit = self._where[meter_id]
        return fleet.meters[unit]

    def set_fault(self, meter_id: str, fault: Fault | None, **params: float) -> None:
        self._where[meter_id][0].set_fault(meter_id, fault, **params)

    async def start(self) -> None:
        for fleet in self.fleets:
            await fleet.start()

    async def stop(self) -> None:
        for fleet in self.fleets:
            await fleet.stop()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
