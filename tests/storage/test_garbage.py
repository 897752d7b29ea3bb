"""Issue 19 item 2: no rejection is left to the database. Every kind of garbage (tests/garbage.py:
the issue's 25 and more), interleaved with good messages, goes normaliser -> PAYG checker ->
pipeline -> spool -> forwarder -> a real store of each backend (SQLite, TimescaleDB). Counted by
kind (each kind is sent as its own meter): no garbage row is stored, each message is a dead letter
with normalise's own reason, none is `sink_rejected`, and every good message is stored.

On main before issue 19 a balance of 1e308 was stored (as a 309-digit amount), and so were
timestamps of 1970 and currencies of four letters.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from gateway.model.samples import RawPayload
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.runtime.pipeline import Item, Pipeline
from gateway.validate.payg import PaygChecker
from storage.base import Store
from storage.spool import Spool
from storage.spool.forwarder import Forwarder
from tests.garbage import GARBAGE
from tests.strategies_poison import EPOCH, NOW
from tests.unit.test_pipeline_frames import validator

COPIES = 3
KINDS = {f"G-{i:02d}": g for i, g in enumerate(GARBAGE)}
PAYG = {**dict.fromkeys(KINDS, PaygOptions("KES")), "P-GOOD": PaygOptions("KES")}
UNKNOWN = "NOPE-1"


async def through(store: Store, tmp: Path, items: list[Item]) -> Forwarder:
    async with Spool(tmp / f"spool-{uuid.uuid4().hex}.db", memory_bytes=0) as spool:
        pipeline = Pipeline(Normaliser({}, PAYG), validator(), spool, payg=PaygChecker())
        await pipeline.process(items)
        forwarder = Forwarder(spool, store)
        for _ in range(100):
            if not spool.stats().rows:
                break
            await forwarder.forward_once()
        assert spool.stats().rows == 0
    return forwarder


async def test_every_kind_of_garbage_is_refused_at_normalise_and_no_store_refuses_anything(
        store: Store, tmp_path: Path) -> None:
    items: list[Item] = []
    good: list[Decimal] = []
    for copy in range(COPIES):
        for i, (meter, kind) in enumerate(KINDS.items()):
            at = NOW + timedelta(seconds=copy * 1000 + i * 10)
            epoch = EPOCH + copy * 1000 + i * 10
            sent_as = UNKNOWN if kind.unknown_meter else meter
            items.append(RawPayload(f"payg/{sent_as}/balance", kind.payload(epoch), at,
                                    None if kind.unknown_meter else meter))
            amount = Decimal(f"{copy * 100 + i}.25")
            good.append(amount)
            items.append(RawPayload("payg/P-GOOD/balance", f'{{"ts": {epoch + 1}, "balance": "{amount}"}}'.encode(),
                                    at + timedelta(seconds=1), "P-GOOD"))
    forwarder = await through(store, tmp_path, items)

    assert forwarder.state.deadlettered == 0, "a store refused what normalise let through"
    dead = await store.deadletters(limit=100_000)
    assert [d for d in dead if d.reason == "sink_rejected"] == []
    # Counted by kind: no kind has a stored row...
    stored = {m: b for m in KINDS if (b := await store.latest_balance(m)) is not None}
    assert {KINDS[m].name: str(b.balance)[:20] for m, b in stored.items()} == {}
    # ... and each garbage message is one dead letter of its kind's reason.
    by_kind = Counter((d.meter_id or d.where.split("/")[1], d.reason) for d in dead)
    expected = Counter({(UNKNOWN if k.unknown_meter else m, k.reason): COPIES for m, k in KINDS.items()})
    assert by_kind == expected
    rows = await store.balances("P-GOOD", start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))
    assert sorted(r.balance for r in rows) == sorted(good)
