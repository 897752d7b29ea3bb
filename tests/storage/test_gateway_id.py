"""SPEC §8: several gateways write to one store, and each row says which gateway wrote it.

Two stores on one database stand for two gateways sharing it. Readings carry the id back
through every query (the change feed included); balance updates, events and dead letters
are checked in the tables themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest

from gateway.model import Batch, Source, Status
from storage.base import Store
from tests.storage.backends import open_backend
from tests.storage.samples import T0, balance, deadletter, event, reading

TABLES = ("readings", "balances", "events", "deadletters")


@pytest.fixture
async def two_gateways(store_target: tuple[str, str]) -> AsyncIterator[tuple[Store, Store]]:
    """Stores of gateways "gw-a" and "gw-b" on one migrated database."""
    a = await open_backend(*store_target, gateway_id="gw-a")
    b = await open_backend(*store_target, gateway_id="gw-b")
    try:
        await a.migrate()
        await b.migrate()
        yield a, b
    finally:
        await a.close()
        await b.close()


async def stamps(target: tuple[str, str], table: str) -> list[tuple[str, str | None]]:
    """(meter_id, gateway_id) of every row of `table`, ordered."""
    backend, where = target
    sql = f"SELECT coalesce(meter_id, '-'), gateway_id FROM {table} ORDER BY 1, 2"
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            return [(m, g) for m, g in con.execute(sql)]
        finally:
            con.close()
    async with await psycopg.AsyncConnection.connect(where) as conn:
        cur = await conn.execute(sql)
        return [(m, g) for m, g in await cur.fetchall()]


async def test_each_gateway_stamps_what_it_writes(two_gateways: tuple[Store, Store],
                                                  store_target: tuple[str, str]) -> None:  # fmt: skip
    a, b = two_gateways
    await a.write(Batch(readings=[reading("M-A", minutes=m) for m in range(3)], balances=[balance("P-A")],
                        events=[event(meter_id="M-A")], deadletters=[deadletter(meter_id="M-A")]))  # fmt: skip
    await b.write(Batch(readings=[reading("M-B", minutes=m) for m in range(2)], balances=[balance("P-B")],
                        events=[event(meter_id="M-B")], deadletters=[deadletter(meter_id="M-B")]))  # fmt: skip

    page = await a.feed(after=0)
    assert [(r.meter_id, r.gateway_id) for r in page.items] == [("M-A", "gw-a")] * 3 + [("M-B", "gw-b")] * 2
    assert {r.gateway_id for r in await b.readings("M-A", start=T0, end=T0 + timedelta(hours=1))} == {"gw-a"}
    assert [r.gateway_id for r in await b.latest_readings("M-B")] == ["gw-b"]
    assert await stamps(store_target, "readings") == [("M-A", "gw-a")] * 3 + [("M-B", "gw-b")] * 2
    for table in TABLES[1:]:
        meters = ("P-A", "P-B") if table == "balances" else ("M-A", "M-B")
        assert await stamps(store_target, table) == [(meters[0], "gw-a"), (meters[1], "gw-b")], table


async def test_a_key_written_by_both_gateways_keeps_its_first_writer(two_gateways: tuple[Store, Store]) -> None:
    # A meter configured on two gateways: both poll it; the first write stands, the
    # second (same value) changes nothing, its gateway id included.
    a, b = two_gateways
    await a.write(Batch(readings=[reading("M-1", value=5.0)]))
    result = await b.write(Batch(readings=[reading("M-1", value=5.0)]))
    assert (result.readings_inserted, result.readings_duplicate) == (0, 1)
    [got] = (await a.feed(after=0)).items
    assert got.gateway_id == "gw-a"


async def test_a_real_read_replacing_an_estimate_is_stamped_by_its_writer(two_gateways: tuple[Store, Store]) -> None:
    a, b = two_gateways
    await a.write(Batch(readings=[reading("M-1", value=4.0, source=Source.ESTIMATE, status=Status.ESTIMATED)]))
    result = await b.write(Batch(readings=[reading("M-1", value=4.2)]))
    assert result.readings_replaced == 1
    items = (await a.feed(after=0)).items
    assert [(r.source, r.gateway_id) for r in items] == [(Source.MODBUS, "gw-b")]


async def test_a_store_without_a_gateway_id_leaves_it_empty(store_target: tuple[str, str]) -> None:
    store = await open_backend(*store_target)
    try:
        await store.migrate()
        await store.write(Batch(readings=[reading()], balances=[balance()], events=[event()],
                                deadletters=[deadletter()]))  # fmt: skip
        assert [r.gateway_id for r in (await store.feed(after=0)).items] == [None]
        for table in TABLES:
            assert [g for _, g in await stamps(store_target, table)] == [None], table
    finally:
        await store.close()
