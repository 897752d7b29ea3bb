"""Helpers of the P1/SML driver tests: a reader on a port, what it emitted, its readings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

from drivers.obis_stream.reader import Codec, StreamReader
from drivers.obis_stream.settings import PortSection, StreamSection
from gateway.config.objects import load_object_maps
from gateway.model import DeadLetter, Event, Source
from gateway.model.samples import RawObjects, Sample
from gateway.normalise.objects import ObjectReader


class Got:
    """An emit that keeps what the reader emits."""

    def __init__(self) -> None:
        self.objects: list[RawObjects] = []
        self.dead: list[DeadLetter] = []
        self.events: list[Event] = []

    async def __call__(self, sample: Sample) -> None:
        if isinstance(sample, RawObjects):
            self.objects.append(sample)
        elif isinstance(sample, DeadLetter):
            self.dead.append(sample)
        elif isinstance(sample, Event):
            self.events.append(sample)


@contextlib.asynccontextmanager
async def reading(codec: Codec, port: PortSection, meters: dict[int, str], got: Got,
                  **settings: float) -> AsyncIterator[StreamReader]:
    section = StreamSection.model_validate({"ports": [port], **settings})
    reader = StreamReader(codec, port, section, meters, got)
    task = asyncio.create_task(reader.run())
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def canonical(raw: RawObjects, map_name: str, source: Source) -> dict[str, Decimal]:
    """The readings the normaliser makes of `raw`, as the decimals their floats are."""
    batch = ObjectReader(load_object_maps()[map_name], source).read(raw)
    assert batch.deadletters == []
    return {r.channel.value: Decimal(repr(r.value)) for r in batch.readings}
