"""Issue 22 item 1 through the whole path, on every store: arbitrary bytes, arbitrary JSON, odd
balance messages and the poison payloads (tests/poison.py), with passes of Modbus polls of
arbitrary words, go normaliser -> validator and PAYG checker -> pipeline -> spool (read back from
its file: the codec) -> forwarder -> store. Nothing raises, every message is acknowledged, each
ends as the balance or the dead letter normalise made of it, no store refuses a row, and the
pipeline then still stores a good message.

Also: what the stores and the forwarder do with rows they cannot hold, and a command reply whose
correlation id a store cannot look up (it stalled the reply worker on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.mqtt.commands import CommandSettings, CommandTracker
from drivers.samples import RawPayload, RawRegisters
from gateway.errors import SinkError
from gateway.model import (
    BalanceUpdate,
    Batch,
    Command,
    CommandKind,
    CommandStatus,
    DeadLetter,
    Event,
    EventKind,
    Severity,
)
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.runtime.pipeline import Item, Pipeline
from gateway.validate.payg import PaygChecker
from storage.base import Store
from storage.records import WriteResult
from storage.spool import Spool
from storage.spool.forwarder import Forwarder
from tests.fixtures.gateway import eventually
from tests.storage.samples import T0, reading
from tests.strategies_poison import EPOCH, KNOWN_POISON, NOW, passes, payloads
from tests.unit.test_pipeline_frames import METERS, validator

F = TypeVar("F", bound=Callable[..., Any])
#: P-GOOD only ever sends good messages: its one per example must be stored whatever came before.
PAYG = {"P-0001": PaygOptions("KES"), "P-0002": PaygOptions("EUR"), "P-GOOD": PaygOptions("KES")}
TOPICS = {"P-0001": "payg/P-0001/balance", "P-0002": "payg/P-0002/balance", None: "payg/P-9999/balance"}
messages = st.lists(st.tuples(payloads, st.sampled_from(["P-0001", "P-0002", None])), min_size=1, max_size=6)


@dataclass
class Run:
    """What the examples of one test share: the store, and the keys already stored in it."""

    store: Store
    tmp: Path
    examples: itertools.count[int] = field(default_factory=itertools.count)
    stored: dict[tuple[str, datetime], BalanceUpdate] = field(default_factory=dict)

    async def through(self, items: list[Item]) -> Forwarder:
        """`items` through a pipeline into a fresh spool, and on into the store until it is empty."""
        async with Spool(self.tmp / f"spool-{uuid.uuid4().hex}.db", memory_bytes=0) as spool:
            pipeline = Pipeline(Normaliser(METERS, PAYG), validator(), spool, payg=PaygChecker())
            await pipeline.process(items)
            forwarder = Forwarder(spool, self.store)
            for _ in range(50):
                if not spool.stats().rows:
                    break
                await forwarder.forward_once()
            assert spool.stats().rows == 0
        return forwarder


async def check_stored(run: Run, expected: list[tuple[RawPayload, Batch]]) -> None:
    """Each message is in the store as normalise made it: its balance, or its dead letter."""
    dead = await run.store.deadletters(limit=10_000)
    found = {(d.ts, d.where, d.reason) for d in dead}
    for raw, made in expected:
        for d in made.deadletters:
            assert (d.ts, d.where, d.reason) in found, (raw.payload, d)
        for b in made.balances:
            rows = await run.store.balances(b.meter_id, start=b.ts, end=b.ts + timedelta(microseconds=1))
            assert len(rows) == 1, (raw.payload, b)
            first = run.stored.setdefault((b.meter_id, b.ts), b)  # the first of a key is kept
            got = rows[0]
            assert (got.balance, got.currency, got.debt, got.emergency_credit, got.last_topup_amount) == \
                (first.balance, first.currency, first.debt, first.emergency_credit, first.last_topup_amount)


@pytest.fixture
def run(store: Store, tmp_path: Path) -> Run:
    """Shared by the examples of one test (hypothesis runs them all within one fixture scope)."""
    return Run(store, tmp_path)


def with_poison(test: F) -> F:
    """Every poison payload of tests/poison.py, in one example, to a meter and to no known meter."""
    every = [(payload, meter) for payload in KNOWN_POISON for meter in ("P-0001", None)]
    return example(every, [])(test)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages, st.lists(passes(METERS), max_size=1))
@with_poison
async def test_any_messages_and_polls_go_the_whole_way_and_the_gateway_keeps_storing(
        run: Run, sent: list[tuple[bytes, str | None]], polled: list[list[RawRegisters]]) -> None:
    store = run.store
    n = next(run.examples)
    # Each message its own receipt time: its dead letter is found by it.
    at = NOW + timedelta(minutes=10 * n)
    acked: list[int] = []
    raws = [RawPayload(TOPICS[meter], payload, at + timedelta(microseconds=i), meter, ack=partial(acked.append, i))
            for i, (payload, meter) in enumerate(sent)]
    forwarder = await run.through([*raws, *(p for polls in polled for p in polls)])
    assert sorted(acked) == list(range(len(raws)))
    assert forwarder.state.deadlettered == 0, "a store refused what normalise let through"
    reference = Normaliser({}, PAYG)
    await check_stored(run, [(raw, reference.payload(raw)) for raw in raws])
    # And the next good message is stored.
    ts = EPOCH + 600 * n
    good = RawPayload("payg/P-GOOD/balance", f'{{"ts": {ts}, "balance": "12.{n:02d}"}}'.encode(),
                      at + timedelta(minutes=5), "P-GOOD")
    await run.through([good])
    rows = await store.balances("P-GOOD", start=datetime.fromtimestamp(ts, NOW.tzinfo),
                                end=datetime.fromtimestamp(ts + 1, NOW.tzinfo))
    assert [r.balance for r in rows] == [Decimal(f"12.{n:02d}")]


# -- what a store cannot hold, and the forwarder ---------------------------------------------------

async def test_a_store_holds_what_normalise_lets_through_and_refuses_the_rest_as_a_sink_error(store: Store) -> None:
    # The largest and finest amounts the payload parser accepts (tests/unit/test_poison.py), exactly.
    edges = [Decimal("9.9e131071"), Decimal("-9.9e131071"), Decimal("1e-16383")]
    await store.write(Batch(balances=[BalanceUpdate("P-1", T0 + timedelta(minutes=i), v, "KES", debt=v)
                                      for i, v in enumerate(edges)]))
    got = await store.balances("P-1", start=T0, end=T0 + timedelta(hours=1))
    assert [(b.balance, b.debt) for b in got] == [(v, v) for v in edges]
    # A lone surrogate escaped psycopg as UnicodeEncodeError: the forwarder did not catch it.
    for batch in (Batch(balances=[BalanceUpdate("P-1", T0, Decimal(1), "\ud800")]),
                  Batch(events=[Event(T0, "P-1", EventKind.COMMAND, Severity.INFO, "\udfff")])):
        with pytest.raises(SinkError):
            await store.write(batch)
    await store.write(Batch(readings=[reading()]))  # and it goes on


class Breaking:
    """The store, with a failure it does not translate on one meter's readings: a bug (TypeError),
    or its disk or socket (OSError)."""

    def __init__(self, store: Store, error: type[Exception] = TypeError) -> None:
        self.store = store
        self.error = error

    async def write(self, batch: Batch) -> WriteResult:
        if any(r.meter_id == "M-bug" for r in batch.readings):
            msg = "a row the store's driver chokes on"
            raise self.error(msg)
        return await self.store.write(batch)


async def test_a_row_the_store_raises_an_unforeseen_error_on_is_set_aside_and_the_rest_lands(
        store: Store, tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.append(Batch(readings=[reading("M-1", minutes=m) for m in range(3)]))
        await spool.append(Batch(readings=[reading("M-bug"), reading("M-2")]))
        forwarder = Forwarder(spool, Breaking(store))  # type: ignore[arg-type]
        await forwarder.forward_once()
        assert spool.stats().rows == 0
    assert forwarder.state.deadlettered == 1
    (dead,) = await store.deadletters()
    assert (dead.reason, dead.meter_id, dead.source) == ("sink_rejected", "M-bug", "sink")
    assert "TypeError: a row the store's driver chokes on" in dead.detail
    latest = await store.latest_readings("M-2")
    assert [r.meter_id for r in latest] == ["M-2"]


async def test_an_os_error_out_of_the_store_is_retried_never_dead_lettered(store: Store, tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.append(Batch(readings=[reading("M-bug"), reading("M-2")]))
        breaking = Breaking(store, OSError)
        forwarder = Forwarder(spool, breaking)  # type: ignore[arg-type]
        await forwarder.forward_once()
        assert (spool.stats().rows, forwarder.state.sink_up, forwarder.state.deadlettered) == (1, False, 0)
        breaking.error = TypeError  # the disk is back; the row itself is still one the store chokes on
        await forwarder.forward_once()
        assert spool.stats().rows == 0 and forwarder.state.sink_up
    assert [d.meter_id for d in await store.deadletters()] == ["M-bug"]


# -- command replies --------------------------------------------------------------------------------

class Connected:
    connected = True

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, response_topic: str | None = None,
                      correlation_data: bytes | None = None, timeout: float | None = None) -> None:
        return None


async def test_a_reply_with_a_correlation_id_no_store_can_hold_is_a_dead_letter_and_later_replies_settle(
        store: Store) -> None:
    # Looking such an id up failed on PostgreSQL (NUL), and the reply worker retried it forever:
    # no later reply was settled or acknowledged.
    emitted: list[Event | DeadLetter] = []

    async def emit(item: Event | DeadLetter) -> None:
        emitted.append(item)

    tracker = CommandTracker(CommandSettings(command_topic="payg/{meter_id}/command",
                                             reply_topic="payg/{meter_id}/command/reply"),
                             persist=store.save_command, load=store.get_command, emit=emit,
                             known_meters={"P-1"}, origin="gw")
    sent = Command(correlation_id="gw.42", meter_id="P-1", kind=CommandKind.DISCONNECT, created_at=T0,
                   updated_at=T0)
    await store.save_command(sent)  # sent before a restart: the tracker looks it up
    acked: list[str] = []
    topic = "payg/P-1/command/reply"
    worker = asyncio.create_task(tracker.run())
    try:
        tracker.handle_reply("P-1", topic, b'{"correlation_id": "gw.\\u0000", "status": "ok"}', None,
                             lambda: acked.append("poison"))
        tracker.handle_reply("P-1", topic, b'{"correlation_id": "gw.42", "status": "ok", "detail": "\\ud800"}',
                             None, lambda: acked.append("good"))
        await eventually(lambda: len(acked) == 2, timeout=10)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert acked == ["poison", "good"]
    dead = [d for d in emitted if isinstance(d, DeadLetter)]
    assert [(d.reason, d.where) for d in dead] == [("bad_text", topic)]
    settled = await store.get_command("gw.42")
    assert settled is not None and settled.status is CommandStatus.ACKNOWLEDGED and settled.detail == "\\ud800"
