"""A test-only driver: P1-like telegrams from files, one per meter, read through an object map.

It exists to show that a protocol plugs in through drivers.base alone: a spec (its [p1file]
section, a meter's `file` key, a cross-check, the facts of its meters) and a Driver that emits
RawObjects. Nothing in the tree names it; tests register it with `Gateway(..., drivers=...)`.

A telegram file holds one value per line, "code value [unit]", e.g.::

    1-0:1.8.0 12345678 Wh
    1-0:1.7.0 1500

A `0-0:1.0.0` line (P1's timestamp object) holds the meter's clock as ISO 8601: the telegram's ts
(else its receipt).
"""

from __future__ import annotations

import asyncio
import functools
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from annotated_types import Gt

from drivers.base import BuildContext, DriverSpec, DriverStatus, Emit, MeterFacts, Observed, Problem
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.profiles import DeviceProfile, ObjectMap
from gateway.model.samples import ObjectValue, RawObjects


@dataclass(frozen=True, slots=True)
class P1FileSettings:
    """The [p1file] section."""

    folder: str = ""
    objects: str = field(default="", metadata={"description": "The object map (TOML) of the meters"})
    interval: Annotated[float, Gt(0)] = 0.05


@dataclass(frozen=True, slots=True)
class P1FileMeter:
    """A p1file meter's own keys."""

    file: str | None = field(default=None, metadata={"description": "Its telegram file in [p1file] folder"})


def _mine(meters: Sequence[MeterBinding]) -> Iterator[MeterBinding]:
    return (b for b in meters if b.protocol == SPEC.protocol)


def check(settings: P1FileSettings, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
          ) -> Iterator[Problem]:
    mine = list(_mine(meters))
    if mine and not settings.folder:
        yield ("p1file", "folder"), "p1file meters need a folder"
    for b in mine:
        if b.fields.file is None:
            yield ("meters", b.index), f"meter {b.meter_id}: a p1file meter needs 'file'"


@functools.cache
def _object_map(path: str) -> ObjectMap:
    return ObjectMap.from_dict(tomllib.loads(Path(path).read_text()))


def facts(binding: MeterBinding, settings: P1FileSettings, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
    path = str(Path(settings.folder) / (binding.fields.file or ""))
    objects = _object_map(settings.objects)
    return MeterFacts(protocol=Protocol.P1, address=path, model=objects.name, where=f"p1 file {path}",
                      objects=objects)


#: P1's timestamp object: the meter's clock when it sent the telegram.
CLOCK = "0-0:1.0.0"


def meter_time(values: tuple[ObjectValue, ...]) -> datetime | None:
    return next((datetime.fromisoformat(str(v)) for code, v, _ in values if code == CLOCK), None)


def parse(text: str) -> tuple[ObjectValue, ...]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
    return tuple(out)


class P1FileReader:
    """Reads each meter's telegram file when it changes and emits it as RawObjects."""

    def __init__(self, settings: P1FileSettings, meters: dict[str, Path], emit: Emit) -> None:
        self.settings = settings
        self._files = meters
        self._emit = emit
        self._seen: dict[str, bytes] = {}
        self.readouts = 0

    @property
    def name(self) -> str:
        return "p1file"

    @property
    def target(self) -> str:
        return ""

    def meter_ids(self) -> tuple[str, ...]:
        return tuple(self._files)

    def meter_health(self, meter_id: str) -> None:
        return None

    def status(self, observed: Observed) -> DriverStatus:
        return DriverStatus(label="p1file", where=self.settings.folder, connected=True, rate=0.0,
                            rate_unit="readouts/s", errors_by_kind={}, meters=len(self._files),
                            detail={"readouts": self.readouts})

    async def run(self) -> None:
        while True:
            for meter_id, path in self._files.items():
                raw = path.read_bytes() if path.exists() else b""
                if raw and raw != self._seen.get(meter_id):
                    self._seen[meter_id] = raw
                    now = datetime.now(UTC)
                    values = parse(raw.decode())
                    await self._emit(RawObjects(meter_id, meter_time(values) or now, now, values, raw))
                    self.readouts += 1
            await asyncio.sleep(self.settings.interval)


def build(ctx: BuildContext) -> list[P1FileReader]:
    s: P1FileSettings = ctx.settings
    files = {b.meter_id: Path(s.folder) / b.fields.file for b in _mine(ctx.meters) if b.active}
    return [P1FileReader(s, files, ctx.emit)] if files else []


SPEC = DriverSpec(protocol="p1file", source=Source.P1, settings=P1FileSettings, meter_fields=P1FileMeter,
                  build=build, facts=facts, check=check)
