"""Helpers of the P1/SML driver tests: a reader on a port, what it emitted, the shared fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.obis_stream.reader import Codec, StreamReader
from drivers.obis_stream.settings import PortSection, StreamSection
from gateway.config.objects import load_object_maps
from gateway.model import DeadLetter, Source
from gateway.model.samples import RawObjects, Sample
from gateway.normalise.objects import ObjectReader

#: Recorded telegrams of public test suites, laid beside the project (never copied into it).
SHARED = Path(os.environ.get("METER_GATEWAY_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "fixtures"


def shared_fixtures(sub: str) -> Path:
    """The folder, or a skip saying why; under CI (CI=true) a missing folder fails instead."""
    folder = SHARED / sub
    if not folder.is_dir():
        why = f"recorded telegrams not found at {folder} (shared/fixtures/{sub})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return folder


class Got:
    """An emit that keeps what the reader emits."""

    def __init__(self) -> None:
        self.objects: list[RawObjects] = []
        self.dead: list[DeadLetter] = []

    async def __call__(self, sample: Sample) -> None:
        if isinstance(sample, RawObjects):
            self.objects.append(sample)
        elif isinstance(sample, DeadLetter):
            self.dead.append(sample)


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
