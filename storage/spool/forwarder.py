"""Drain the spool into the sink in order; back off while the sink is down.

Never reorders, never drops: a batch leaves the spool only after the sink committed it.
A batch the sink refuses for a reason other than being unreachable is split until the
offending rows are isolated; those go to the dead-letter table and the rest lands. A failure
the store did not translate into a SinkError (a bug, or a value its driver chokes on) is taken
as a refusal too, its traceback logged with the row it isolates: a spooled row that made the
forwarder raise would otherwise stop the gateway again after every restart. An OSError is not
the data's fault (a disk, a socket): it is retried as an unreachable sink, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.backoff import Backoff
from gateway.errors import SinkError, SinkUnavailable, SpoolUnwritable
from gateway.model import Batch, DeadLetter, Event, EventKind, Reading, Severity
from storage.base import Store
from storage.records import WriteResult
from storage.spool.spool import Spool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ForwarderState:
    sink_up: bool = True
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_write_at: datetime | None = None
    batches: int = 0
    rows: int = 0
    retries: int = 0
    deadlettered: int = 0
    last_batch_s: float = 0.0
    conflicts: int = 0
    on_write: list[Callable[[WriteResult, float], None]] = field(default_factory=list)


#: How many times `batch_items` one write may take while the spool holds more than that (catching up).
CATCH_UP = 8


class Forwarder:
    """Moves spooled batches to the store. A write is closed by size (`batch_items`) or by
    age (`linger` seconds after the oldest spooled item arrived), whichever comes first.

    While more than `batch_items` wait, a write takes up to `catch_up` times as many: each write costs
    a transaction and a spool delete whatever its size, and a forwarder that stays at the size it keeps
    up with when the store is idle never catches up once it is behind (issue 26: 2,000 meters a second).

    The spool delete of what a write committed runs while the next write goes to the store: they are
    separate files. The next write takes the batches after those committed (`peek(after=...)`), so a
    batch is never written twice while its delete is under way; one delete at a time, in id order.
    """

    def __init__(self, spool: Spool, store: Store, *, batch_items: int = 2000, linger: float = 0.05,
                 backoff: Backoff | None = None, catch_up: int = CATCH_UP) -> None:  # fmt: skip
        self.spool = spool
        self.store = store
        self.batch_items = batch_items
        self.catch_up = max(1, catch_up)
        self.linger = linger
        self.backoff = backoff or Backoff(0.2, 10.0)
        self.state = ForwarderState()
        #: The last spool id the store has committed (its delete may still be under way).
        self._committed = 0
        self._deleting: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Forward until cancelled."""
        try:
            while True:
                await self.spool.wait_for_data()
                await self._linger()
                await self._forward()
        finally:
            # A delete left behind may wait for a full disk for ever; cancelled, its batches stay in the
            # spool and are deleted by the next forward (drain), or sent again after a restart (no-ops).
            if self._deleting is not None and not self._deleting.done():
                self._deleting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._deleting
            self._deleting = None

    async def _linger(self) -> None:
        # Under a trickle, wait a little for a fuller batch: one store transaction per
        # poll of one meter would cost the database more than the data is worth.
        while True:
            stats = self.spool.stats()
            age = stats.oldest_age_s or 0.0
            if stats.items >= self.batch_items or age >= self.linger or stats.full:
                return
            await asyncio.sleep(self.linger - age)

    async def drain(self, deadline: float) -> bool:
        """Forward what is spooled until empty or `deadline` (monotonic) passes."""
        while self.spool.stats().rows and time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self.forward_once(), timeout=max(0.01, remaining))
            except TimeoutError:
                break
        return self.spool.stats().rows == 0

    async def forward_once(self) -> None:
        """Move one chunk of the spool to the sink, its spool delete done when this returns; sleeps with
        backoff if the sink is down."""
        await self._forward()
        await self._deleted()

    async def _forward(self) -> None:
        """forward_once, but the spool delete of the chunk may still be under way when this returns."""
        waiting = self.spool.stats().items
        size = self.batch_items if waiting <= self.batch_items else min(waiting, self.batch_items * self.catch_up)
        chunk = await self.spool.peek(size, after=self._committed)
        if not chunk:
            # Nothing new: what is left in the spool was committed; see its delete through.
            await self._deleted()
            if self.spool.stats().rows and self._committed:
                await self._delete(self._committed)
            return
        merged = Batch()
        for _, b in chunk:
            merged.extend(b)
        started = time.perf_counter()
        try:
            result = await self._write_isolating(merged)
            if result.conflicts:
                # Same key, different value: the first value is kept; say so, never
                # overwrite. A separate write: if it fails, the whole chunk is retried,
                # the readings are then duplicates and the conflicts are found again.
                await self.store.write(Batch(events=[_conflict_event(r) for r in result.conflicts]))
        except SinkUnavailable as exc:
            self._down(exc)
            await asyncio.sleep(self.backoff.next())
            return
        if not self.state.sink_up:
            log.info("sink is back: forwarding %d spooled batches", self.spool.stats().rows)
        self.state.sink_up = True
        self.backoff.reset()
        elapsed = time.perf_counter() - started
        self.state.conflicts += len(result.conflicts)
        self._committed = chunk[-1][0]
        await self._deleted()
        self._deleting = asyncio.create_task(self._delete(self._committed), name="spool-delete")
        self.state.batches += 1
        self.state.rows += len(merged)
        self.state.last_batch_s = elapsed
        self.state.last_write_at = datetime.now(UTC)
        for callback in self.state.on_write:
            callback(result, elapsed)

    async def _deleted(self) -> None:
        """Wait for the delete under way, if any (its error, if it failed, is raised here)."""
        task, self._deleting = self._deleting, None
        if task is not None:
            await task

    async def _delete(self, last_id: int) -> None:
        """Forget what the store committed. A delete writes (SQLite's WAL): while the spool's disk is
        full it waits and tries again (the spool logs it and says so in its stats); a crash meanwhile
        only sends these batches to the store again, where they are no-ops."""
        retry = Backoff(0.2, 5.0)
        while True:
            try:
                await self.spool.delete_upto(last_id)
                return
            except SpoolUnwritable:
                await asyncio.sleep(retry.next())

    async def _write_isolating(self, batch: Batch) -> WriteResult:
        try:
            return await self.store.write(batch)
        except SinkUnavailable:
            raise
        except SinkError as exc:
            refused = exc
        except OSError as exc:
            msg = f"{type(exc).__name__}: {exc}"
            raise SinkUnavailable(msg) from exc
        except Exception as exc:
            refused = _Unforeseen(f"{type(exc).__name__}: {exc}")
            refused.__cause__ = exc
        if len(batch) <= 1:
            await self._deadletter(batch, refused)
            return WriteResult()
        log.warning("sink refused a batch of %d (%s): isolating the bad rows", len(batch), refused)
        left, right = _halves(batch)
        a = await self._write_isolating(left)
        b = await self._write_isolating(right)
        return _merge(a, b)

    async def _deadletter(self, batch: Batch, exc: SinkError) -> None:
        item = (batch.readings or batch.balances or batch.events or batch.deadletters)[0]
        meter_id = getattr(item, "meter_id", None)
        # ts and payload come from the item, not the clock: a replay of the same batch
        # (a crash before the spool delete) makes the same dead letter, which the store
        # then keeps once.
        dead = DeadLetter(ts=item.ts, source="sink", where=type(item).__name__, reason="sink_rejected",
                          detail=_printable(str(exc))[:500], payload=repr(item)[:2048],
                          meter_id=None if meter_id is None else _printable(meter_id))
        self.state.deadlettered += 1
        log.error("sink rejected %r: %s (sent to dead letters)", item, exc,
                  exc_info=exc.__cause__ if isinstance(exc, _Unforeseen) else None)
        if isinstance(item, DeadLetter):
            return  # a dead letter the sink refuses cannot be dead-lettered again; logged above
        try:
            await self.store.write(Batch(deadletters=[dead]))
        except SinkUnavailable:
            raise
        except Exception as again:
            # Even the dead letter is refused: the log line above is all that is left of it.
            log.error("sink refused the dead letter of %r too: %s", item, again)

    def _down(self, exc: Exception) -> None:
        if self.state.sink_up:
            log.error("sink unavailable: %s; spooling (%d batches waiting)", exc, self.spool.stats().rows)
        self.state.sink_up = False
        self.state.retries += 1
        self.state.last_error = str(exc)
        self.state.last_error_at = datetime.now(UTC)


class _Unforeseen(SinkError):
    """An exception out of the store that is not a SinkError, taken as the store's refusal."""


def _printable(text: str) -> str:
    """NUL is the one character PostgreSQL text cannot hold; show it escaped instead."""
    return text.replace("\x00", "\\x00")


def _conflict_event(r: Reading) -> Event:
    return Event(ts=r.ts, meter_id=r.meter_id, kind=EventKind.DUPLICATE_CONFLICT, severity=Severity.WARNING,
                 detail=f"{r.channel.value} at {r.ts.isoformat()}: re-delivered with value {r.value:g}, "
                        "kept the stored one")  # fmt: skip


def _halves(batch: Batch) -> tuple[Batch, Batch]:
    items: list[tuple[str, object]] = [("readings", x) for x in batch.readings] + \
        [("balances", x) for x in batch.balances] + [("events", x) for x in batch.events] + \
        [("deadletters", x) for x in batch.deadletters]
    mid = len(items) // 2
    out = (Batch(), Batch())
    for i, (name, x) in enumerate(items):
        getattr(out[0 if i < mid else 1], name).append(x)
    return out


def _merge(a: WriteResult, b: WriteResult) -> WriteResult:
    return WriteResult(
        readings_inserted=a.readings_inserted + b.readings_inserted,
        readings_duplicate=a.readings_duplicate + b.readings_duplicate,
        conflicts=a.conflicts + b.conflicts,
        balances_inserted=a.balances_inserted + b.balances_inserted,
        events_inserted=a.events_inserted + b.events_inserted,
        deadletters_inserted=a.deadletters_inserted + b.deadletters_inserted,
    )
