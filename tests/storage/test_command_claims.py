"""Issue 27, item 1: a PAYG command is stored once per key (its reference, the client's Idempotency-Key),
claimed before anything is sent: on every backend, for concurrent claims of one store and of two stores on
one database (two gateways), after an upgrade from the schema without keys."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from gateway.model import Command, CommandKind, CommandStatus
from storage.base import Store
from tests.storage.backends import open_backend
from tests.storage.samples import T0

#: The schema version before the keys (the coordinator renumbers the migrations if needed).
BEFORE_KEYS = {"sqlite": 5, "timescale": 4, "postgresql": 4}


def topup(cid: str, *, reference: str | None = "rcpt-0001", key: str | None = None, amount: str = "100.50",
          meter_id: str = "P-00003", minutes: int = 0) -> Command:
    at = T0 + timedelta(minutes=minutes)
    return Command(cid, meter_id, CommandKind.TOPUP, at, amount=Decimal(amount), reference=reference,
                   updated_at=at, idempotency_key=key)


async def test_a_claim_stores_once_per_reference_and_per_key(store: Store) -> None:
    first = topup("gw.1")
    assert await store.claim_command(first) == []
    assert await store.get_command("gw.1") == first

    # Same reference, another body: nothing stored, the holder returned (the caller tells them apart).
    assert await store.claim_command(topup("gw.2", amount="200.00")) == [first]
    assert await store.claim_command(topup("gw.3", meter_id="P-00004")) == [first]
    # An Idempotency-Key, no reference.
    keyed = dataclasses.replace(topup("gw.4", reference=None, key="k-1"), kind=CommandKind.DISCONNECT, amount=None)
    assert await store.claim_command(keyed) == []
    assert await store.claim_command(dataclasses.replace(keyed, correlation_id="gw.5")) == [keyed]
    # A command with both keys is found by either; the reference's holder comes first.
    both = topup("gw.6", reference="rcpt-0002", key="k-2")
    assert await store.claim_command(both) == []
    assert await store.claim_command(topup("gw.7", reference="rcpt-0002")) == [both]
    assert await store.claim_command(topup("gw.8", reference=None, key="k-2")) == [both]
    assert await store.claim_command(topup("gw.9", reference="rcpt-0002", key="k-1")) == [both, keyed]
    # Without keys every command is new.
    plain = [topup(f"gw.p{i}", reference=None) for i in range(2)]
    assert [await store.claim_command(c) for c in plain] == [[], []]

    assert sorted(c.correlation_id for c in await store.commands()) == [
        "gw.1", "gw.4", "gw.6", "gw.p0", "gw.p1"]


async def test_a_status_update_keeps_the_keys(store: Store) -> None:
    first = topup("gw.1", key="k-1")
    await store.claim_command(first)
    failed = dataclasses.replace(first, status=CommandStatus.FAILED, updated_at=T0 + timedelta(seconds=1),
                                 detail="not sent", unsent=True)
    await store.save_command(failed)
    assert await store.get_command("gw.1") == failed
    assert await store.claim_command(topup("gw.2", reference=None, key="k-1")) == [failed]
    assert await store.claim_command(topup("gw.3")) == [failed]


@pytest.fixture
async def two_gateways(store_target: tuple[str, str]) -> AsyncIterator[tuple[Store, Store]]:
    a = await open_backend(*store_target, gateway_id="gw-a")
    b = await open_backend(*store_target, gateway_id="gw-b")
    try:
        await a.migrate()
        await b.migrate()
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_concurrent_claims_of_one_key_store_exactly_one(two_gateways: tuple[Store, Store]) -> None:
    a, b = two_gateways
    # Eight requests at once on each of two gateways sharing the store, each with its own correlation id.
    claims = [(a if i % 2 else b).claim_command(topup(f"gw-{'ab'[i % 2]}.{i}", key="k-race"))
              for i in range(16)]
    held = await asyncio.gather(*claims)

    winners = [i for i, h in enumerate(held) if h == []]
    assert len(winners) == 1
    (stored,) = await a.commands()
    assert stored.correlation_id == f"gw-{'ab'[winners[0] % 2]}.{winners[0]}"
    assert all(h == [stored] for i, h in enumerate(held) if i not in winners)


async def test_an_unsent_command_is_taken_again_once(two_gateways: tuple[Store, Store]) -> None:
    a, b = two_gateways
    first = topup("gw.1")
    await a.claim_command(first)
    await a.save_command(dataclasses.replace(first, status=CommandStatus.FAILED, detail="not sent", unsent=True))

    at = T0 + timedelta(minutes=5)
    again = await asyncio.gather(*(s.retry_unsent_command("gw.1", at) for s in (a, b, a, b)))

    taken = [c for c in again if c is not None]
    assert taken == [dataclasses.replace(first, updated_at=at)]  # PENDING, not unsent, no detail
    assert await a.get_command("gw.1") == taken[0]
    assert await b.retry_unsent_command("gw.1", at) is None  # PENDING now
    # A command that may have reached the broker is never taken again.
    second = topup("gw.2", reference="rcpt-0002")
    await a.claim_command(second)
    await a.save_command(dataclasses.replace(second, status=CommandStatus.FAILED, detail="not confirmed"))
    assert await a.retry_unsent_command("gw.2", at) is None
    assert await a.retry_unsent_command("gw.nope", at) is None


async def _execute(target: tuple[str, str], sql: str, params: tuple[object, ...]) -> None:
    backend, where = target
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            with con:
                con.execute(sql.replace("%s", "?"), params)
        finally:
            con.close()
        return
    async with await psycopg.AsyncConnection.connect(where) as conn:
        await conn.execute(sql, params)


async def test_commands_from_before_the_keys_hold_their_reference(store_target: tuple[str, str]) -> None:
    backend, where = store_target
    old = await open_backend(backend, where)
    try:
        await old.migrate(upto=BEFORE_KEYS[backend])
        # The finding: one receipt sent twice before this version; and a command without a reference.
        for cid, minutes in (("old.2", 2), ("old.1", 1), ("old.3", 3)):
            created = T0 + timedelta(minutes=minutes)
            stamp: object = int(created.timestamp() * 1_000_000) if backend == "sqlite" else created
            reference = None if cid == "old.3" else "rcpt-0001"
            await _execute(store_target, "INSERT INTO commands (correlation_id, meter_id, kind, status, amount,"
                           " reference, created_at) VALUES (%s, 'P-00003', 'topup', 'acknowledged', '100.50', %s, %s)",
                           (cid, reference, stamp))
        await old.migrate()
        (held,) = await old.claim_command(topup("gw.1", minutes=9))
        assert (held.correlation_id, held.status, held.idempotency_key, held.unsent) == (
            "old.1", CommandStatus.ACKNOWLEDGED, None, False)
        assert len(await old.commands()) == 3
    finally:
        await old.close()
