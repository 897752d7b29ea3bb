"""Bounded queue from the drivers, then normalise -> validate -> spool, then ack.

Drivers `await pipeline.emit(sample)`: when the queue is full they wait (back-pressure),
so pollers slow down and MQTT messages stay unacknowledged at the broker. Acks are
called only after the spool commit returned: that commit is "accepted".

The Modbus polls of a pass are decoded together into one columnar frame (`FrameDecoder`),
validated as that frame, and turned into Reading objects only for the spool, whatever the
size of the pass (a frame of one poll costs little more than its Reading objects). MQTT
payloads, poll failures, and events or dead letters the drivers emit go one by one, as they
are few.

No input stops the pipeline (SPEC §7): whatever one message or one poll makes a stage raise, that
item becomes a dead letter (`boundary.failed_item`, reason `internal_error`) and is acknowledged
with the rest; a pass of polls whose frame fails is split until the polls that fail are found,
and only those are set aside. The spool append stays outside that boundary: a disk that cannot
write is not bad input, and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from gateway.model import BalanceUpdate, Batch, DeadLetter, Quality, Reading
from gateway.model.samples import Ack, PollFailure, RawPayload, RawRegisters, Sample
from gateway.normalise.frame import FrameDecoder
from gateway.normalise.normaliser import Normaliser
from gateway.runtime.boundary import Failed, FailureLog, failed_item
from gateway.validate.cross import CrossChecks
from gateway.validate.payg import PaygChecker
from gateway.validate.validator import Validator

log = logging.getLogger(__name__)

#: What drivers hand the pipeline.
Item = Sample


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
                 payg: PaygChecker | None = None, inactive: Collection[str] = ()) -> None:
        self.normaliser = normaliser
        self.validator = validator
        #: Checks across a meter's series (TOU sums, usage while disconnected), after the validator's.
        self.cross = CrossChecks(validator, inactive=inactive)
        # Series ids are the validator's, so the decoded frame indexes its state directly.
        self.decoder = FrameDecoder(normaliser.profiles, validator.series, normaliser.bounds.channels)
        #: Derives PAYG events (low credit, top-up, relay, ...) from the balance updates.
        self.payg = payg
        self.spool = spool
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=queue_size)
        self.max_batch = max_batch
        self.counters = PipelineCounters()
        self._on_batch = on_batch
        self._failures = FailureLog()

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
        #: The message of each balance update, by id, so one the PAYG checker fails on is
        #: dead-lettered as the message it came in.
        sources: dict[int, RawPayload] = {}
        #: Readings of the samples that are not polls (coded values: RawObjects), validated together.
        coded: list[Reading] = []
        for item in items:
            if isinstance(item, RawRegisters):
                self.counters.polls_ok += 1
                try:
                    # Before the meter's installation: one dead letter, not a frame row per register.
                    early = self.normaliser.too_early(item)
                except Exception as exc:
                    batch.deadletters.append(self._failed(item, "normalise", exc))
                    continue
                if early is None:
                    polls.append(item)
                else:
                    batch.deadletters.append(early)
                continue
            if isinstance(item, RawPayload):
                self.counters.payloads += 1
                # Acknowledged whatever it becomes (after the spool commit): redelivering a
                # message that cannot become data would only fail again.
                if item.ack is not None:
                    acks.append(item.ack)
            elif isinstance(item, PollFailure):
                self.counters.polls_failed += 1
            try:
                out = self._one(item)
            except Exception as exc:
                batch.deadletters.append(self._failed(item, "normalise", exc))
                continue
            if self.payg is not None and isinstance(item, RawPayload):
                for update in out.balances:
                    sources[id(update)] = item
            if out.readings:
                coded += out.readings
                out.readings = []
            batch.extend(out)
        # Relay states first: a disconnect reported in this batch already counts for its readings.
        self.cross.relay(batch.balances)
        batch.readings = self._readings(polls, batch)
        if coded:
            batch.readings += self._validated(coded, batch)
        if self.payg is not None and batch.balances:
            self._check_balances(batch, sources)
        if len(batch):
            await self.spool.append(batch)
        for ack in acks:
            ack()
        self._count(batch)
        if self._on_batch is not None:
            try:
                self._on_batch(items, batch)
            except Exception:
                # Counters and diagnostics: the batch is spooled and acknowledged already.
                log.exception("observing a batch of %d items failed", len(items))

    def _one(self, item: Item) -> Batch:
        """What one item that is not a poll gives."""
        return self.normaliser.sample(item)

    def _check_balances(self, batch: Batch, sources: dict[int, RawPayload]) -> None:
        """PAYG events of the batch's balance updates; an update the checker fails on leaves the
        batch and its message becomes a dead letter."""
        assert self.payg is not None
        failed: set[int] = set()

        def set_aside(update: BalanceUpdate, exc: Exception) -> None:
            failed.add(id(update))
            batch.deadletters.append(self._failed(sources.get(id(update), update), "validate", exc))

        try:
            batch.events.extend(self.payg.check(batch.balances, on_error=set_aside))
        except Exception:
            # Not one update's rules (those go to set_aside): e.g. the updates would not sort.
            # Each alone, then; the state of those checked before the failure has moved on.
            log.exception("checking %d balance updates failed; checking them one by one", len(batch.balances))
            for update in batch.balances:
                if id(update) not in failed:
                    batch.events.extend(self.payg.check([update], on_error=set_aside))
        if failed:
            batch.balances = [b for b in batch.balances if id(b) not in failed]

    def _readings(self, polls: list[RawRegisters], batch: Batch, *, whole: bool = True) -> list[Reading]:
        """Decode and validate all polls of the pass at once; their dead letters and events
        (tamper, then VEE's) go to `batch`. Readings come ordered by meter, channel, ts.

        If the pass raises, it is split in halves until the polls that raise are alone: each of
        those is a dead letter, the others are decoded and validated as usual (the readings then
        come ordered within each part). VEE's state is not rolled back: series the failed attempt
        had already moved on see their rows again as repeats, stored without new flags."""
        if not polls:
            return []
        part = Batch()
        try:
            frame, dead, events = self.decoder.decode(polls)
            part.deadletters.extend(dead)
            part.events.extend(events)
            frame, found = self.validator.validate_frame(frame, ordered=True)
            part.events.extend(found)
            part.events.extend(self.cross.check_frame(frame))
            readings = frame.to_readings(self.validator.series)
        except Exception as exc:
            if len(polls) == 1:
                batch.deadletters.append(self._failed(polls[0], "decode", exc))
                return []
            if whole:
                log.warning("a pass of %d polls failed to decode (%s: %s): looking for the polls that fail",
                            len(polls), type(exc).__name__, exc)
            mid = len(polls) // 2
            return (self._readings(polls[:mid], batch, whole=False)
                    + self._readings(polls[mid:], batch, whole=False))
        batch.extend(part)
        return readings

    def _validated(self, readings: list[Reading], batch: Batch) -> list[Reading]:
        """VEE over readings the normaliser made one by one (coded values); events go to `batch`. A
        part that raises is split as `_readings` splits polls, down to the readings that raise."""
        try:
            out, events = self.validator.validate(readings)
            out, crossed = self.cross.check(out)
            events += crossed
        except Exception as exc:
            if len(readings) == 1:
                batch.deadletters.append(self._failed(readings[0], "validate", exc))
                return []
            mid = len(readings) // 2
            return self._validated(readings[:mid], batch) + self._validated(readings[mid:], batch)
        batch.events.extend(events)
        return out

    def _failed(self, item: Failed, stage: str, exc: Exception) -> DeadLetter:
        dead = failed_item(item, stage, exc)
        self._failures(dead, stage, exc)
        return dead

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
