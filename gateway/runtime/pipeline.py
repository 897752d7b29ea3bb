"""Bounded queue from the drivers, then normalise -> validate -> spool, then ack.

Drivers `await pipeline.emit(sample)`: when the queue is full they wait (back-pressure),
so pollers slow down and MQTT messages stay unacknowledged at the broker. Acks are
called only after the spool commit returned: that commit is "accepted".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.samples import Ack, PollFailure, RawPayload, RawRegisters
from gateway.model import Batch, DeadLetter, Event
from gateway.normalise.normaliser import Normaliser
from gateway.validate.payg import PaygChecker
from gateway.validate.validator import Validator
from storage.spool import Spool

log = logging.getLogger(__name__)

Item = RawRegisters | RawPayload | PollFailure | Event | DeadLetter


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
    def __init__(self, normaliser: Normaliser, validator: Validator, spool: Spool, *,
                 queue_size: int = 10_000, max_batch: int = 5000,
                 on_batch: Callable[[list[Item], Batch], None] | None = None,
                 payg: PaygChecker | None = None) -> None:
        self.normaliser = normaliser
        self.validator = validator
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
        for item in items:
            if isinstance(item, RawRegisters):
                batch.extend(self.normaliser.registers(item))
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
        batch.readings, events = self.validator.validate(batch.readings)
        batch.events.extend(events)
        if self.payg is not None and batch.balances:
            batch.events.extend(self.payg.check(batch.balances))
        if len(batch):
            await self.spool.append(batch)
        for ack in acks:
            ack()
        self._count(batch)
        if self._on_batch is not None:
            self._on_batch(items, batch)

    def _count(self, batch: Batch) -> None:
        c = self.counters
        c.batches += 1
        c.readings += len(batch.readings)
        c.balances += len(batch.balances)
        c.events += len(batch.events)
        c.deadletters += len(batch.deadletters)
        for r in batch.readings:
            for name in r.quality.names() or ["none"]:
                c.by_quality[name] += 1
        for d in batch.deadletters:
            c.deadletters_by_reason[d.reason] += 1
        for e in batch.events:
            c.events_by_kind[e.kind.value] += 1
