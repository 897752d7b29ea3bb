"""Bounded queue from the drivers, then normalise -> validate -> spool, then ack.

Drivers `await pipeline.emit(sample)`: when the queue is full they wait (back-pressure),
so pollers slow down and MQTT messages stay unacknowledged at the broker. Acks are
called only after the spool commit returned: that commit is "accepted".

The Modbus polls of a pass are decoded together into one columnar frame (`FrameDecoder`),
validated as that frame, and turned into Reading objects only for the spool, whatever the
size of the pass (a frame of one poll costs little more than its Reading objects). MQTT
payloads, poll failures, and events or dead letters the drivers emit go one by one, as they
are few.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from drivers.samples import Ack, PollFailure, RawPayload, RawRegisters
from gateway.model import Batch, DeadLetter, Event, Quality, Reading
from gateway.normalise.frame import FrameDecoder
from gateway.normalise.normaliser import Normaliser
from gateway.validate.payg import PaygChecker
from gateway.validate.validator import Validator

log = logging.getLogger(__name__)

Item = RawRegisters | RawPayload | PollFailure | Event | DeadLetter


class BatchSink(Protocol):
    """Where accepted batches go: the spool (`storage.spool.Spool`)."""

    async def append(self, batch: Batch) -> int: ...


@dataclass(slots=True)
class PipelineCounters:
    readings: int = 0
    balances: int = 0
    events: int = 0
    deadletters: int = 0
    payloads: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    batches: int = 0
    by_quality: Counter[str] = field(default_factory=Counter)
    deadletters_by_reason: Counter[str] = field(default_factory=Counter)
    events_by_kind: Counter[str] = field(default_factory=Counter)


class Pipeline:
    def __init__(self, normaliser: Normaliser, validator: Validator, spool: BatchSink, *,
                 queue_size: int = 10_000, max_batch: int = 5000,
                 on_batch: Callable[[list[Item], Batch], None] | None = None,
                 payg: PaygChecker | None = None) -> None:
        self.normaliser = normaliser
        self.validator = validator
        # Series ids are the validator's, so the decoded frame indexes its state directly.
        self.decoder = FrameDecoder(normaliser.profiles, validator.series)
        #: Derives PAYG events (low credit, top-up, relay, ...) from the balance updates.
        self.payg = payg
        self.spool = spool
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=queue_size)
        self.max_batch = max_batch
        self.counters = PipelineCounters()
        self._on_batch = on_batch

    async def emit(self, item: Item) -> None:
        """Hand a driver sample to the pipeline; waits while the queue is full."""
        await self.queue.put(item)

    async def close(self) -> None:
        """Ask `run` to finish once everything queued before this call is spooled."""
        await self.queue.put(None)

    async def run(self) -> None:
        """Process until `close()` is called (then drain) or cancelled."""
        while True:
            first = await self.queue.get()
            items: list[Item] = []
            closing = first is None
            if first is not None:
                items.append(first)
            # Take what is already waiting: one spool commit per burst, not per sample.
            while not closing and len(items) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is None:
                    closing = True
                else:
                    items.append(nxt)
            if items:
                await self.process(items)
            if closing:
                return

    async def process(self, items: list[Item]) -> None:
        batch = Batch()
        acks: list[Ack] = []
        polls: list[RawRegisters] = []
        for item in items:
            if isinstance(item, RawRegisters):
                polls.append(item)
                self.counters.polls_ok += 1
            elif isinstance(item, RawPayload):
                batch.extend(self.normaliser.payload(item))
                self.counters.payloads += 1
                if item.ack is not None:
                    acks.append(item.ack)
            elif isinstance(item, PollFailure):
                batch.extend(self.normaliser.failure(item))
                self.counters.polls_failed += 1
            elif isinstance(item, DeadLetter):
                batch.deadletters.append(item)
            else:
                batch.events.append(item)
        batch.readings = self._readings(polls, batch)
        if self.payg is not None and batch.balances:
            batch.events.extend(self.payg.check(batch.balances))
        if len(batch):
            await self.spool.append(batch)
        for ack in acks:
            ack()
        self._count(batch)
        if self._on_batch is not None:
            self._on_batch(items, batch)

    def _readings(self, polls: list[RawRegisters], batch: Batch) -> list[Reading]:
        """Decode and validate all polls of the pass at once; their dead letters and events
        (tamper, then VEE's) go to `batch`. Readings come ordered by meter, channel, ts."""
        if not polls:
            return []
        frame, dead, events = self.decoder.decode(polls)
        batch.deadletters.extend(dead)
        batch.events.extend(events)
        frame, found = self.validator.validate_frame(frame, ordered=True)
        batch.events.extend(found)
        return frame.to_readings(self.validator.series)

    def _count(self, batch: Batch) -> None:
        c = self.counters
        c.batches += 1
        c.readings += len(batch.readings)
        c.balances += len(batch.balances)
        c.events += len(batch.events)
        c.deadletters += len(batch.deadletters)
        # Flag names per distinct quality, not per reading: a pass holds thousands of readings
        # and a handful of flag combinations.
        for quality, n in Counter[Quality](r.quality for r in batch.readings).items():
            for name in quality.names() or ["none"]:
                c.by_quality[name] += n
        for d in batch.deadletters:
            c.deadletters_by_reason[d.reason] += 1
        for e in batch.events:
            c.events_by_kind[e.kind.value] += 1
