"""Device numbers are unique per utility (issue 27 item 8), on every store: creating, changing,
the configuration's sync, batches of a large import, and a store upgraded with duplicates."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.errors import SinkError
from gateway.model import Batch, Meter, Utility
from storage.audit import find_shared_device_numbers
from storage.base import Store
from storage.records import CREATE_BATCH, Conflict, DeviceNumberClash, DeviceNumberTaken, SharedDeviceNumber
from storage.sqlite import rows as sq_rows
from storage.timescale import rows as ts_rows
from tests.storage.backends import open_backend
from tests.storage.samples import T0, meter, reading

NOW = T0 + timedelta(days=30)
#: The last schema version before device numbers were unique, per backend.
BEFORE = {"sqlite": 6, "timescale": 5, "postgresql": 5}


async def device_numbers(store: Store) -> dict[str, str | None]:
    return {m.meter_id: m.device_number for m in await store.list_meters(limit=10_000)}


async def test_a_device_number_belongs_to_one_meter_per_utility(store: Store) -> None:
    await store.create_meters([meter("M-1", device_number="SN-1"), meter("M-2", device_number="SN-2")], at=NOW)
    await store.create_meters([meter("W-1", device_number="SN-1", utility=Utility.WATER)], at=NOW)  # another utility

    with pytest.raises(DeviceNumberTaken) as taken:
        await store.create_meters([meter("M-3"), meter("M-4", device_number="SN-1")], at=NOW)
    assert taken.value.clashes == (DeviceNumberClash("M-4", Utility.ELECTRICITY, "SN-1", "M-1"),)
    assert "device_number 'SN-1' (electricity) is already on meter M-1" in str(taken.value)
    with pytest.raises(DeviceNumberTaken, match=r"'SN-9' .* is already on meter M-5"):
        await store.create_meters([meter("M-5", device_number="SN-9"), meter("M-6", device_number="SN-9")], at=NOW)
    with pytest.raises(DeviceNumberTaken, match=r"'SN-1' .* is already on meter M-1"):
        await store.update_meter("M-2", {"device_number": "SN-1"}, at=NOW)
    assert await device_numbers(store) == {"M-1": "SN-1", "M-2": "SN-2", "W-1": "SN-1"}  # nothing of it stored

    # Its own number again is no change; once M-1 lets go of SN-1, M-2 may have it.
    await store.update_meter("M-2", {"device_number": "SN-2", "location": "moved"}, at=NOW)
    await store.update_meter("M-1", {"device_number": None}, at=NOW)
    await store.update_meter("M-2", {"device_number": "SN-1"}, at=NOW)
    assert [m.meter_id for m in await store.list_meters(search="SN-1", utility=Utility.ELECTRICITY)] == ["M-2"]
    # The database itself refuses a second holder, whatever path the write takes.
    with pytest.raises(SinkError):
        await store.upsert_meters([meter("M-7", device_number="SN-1")])


async def test_a_large_create_is_checked_batch_by_batch_and_is_still_all_or_nothing(store: Store) -> None:
    n = 2 * CREATE_BATCH + 7
    many = [meter(f"B-{i:05d}", device_number=f"DN-{i:05d}", consumer_number=f"C-{i:05d}") for i in range(n)]
    await store.create_meters([meter("OLD-1", device_number="DN-OLD")], at=NOW)

    # A clash in the last batch with a meter of the first, then with a stored meter: nothing stays.
    late_twin = [*many[:-1], meter("B-LAST", device_number="DN-00003")]
    with pytest.raises(DeviceNumberTaken, match=r"'DN-00003' .* is already on meter B-00003"):
        await store.create_meters(late_twin, at=NOW)
    with pytest.raises(DeviceNumberTaken, match="already on meter OLD-1"):
        await store.create_meters([*many[:-1], meter("B-LAST", device_number="DN-OLD")], at=NOW)
    with pytest.raises(Conflict, match="B-00001"):
        await store.create_meters([*many, meter("B-00001")], at=NOW)
    assert list(await device_numbers(store)) == ["OLD-1"]

    # A meter that already has readings opens its assignment from them (the usual new one has none).
    await store.write(Batch(readings=[reading("B-00007", minutes=-60, value=41.5)]))
    many[7] = meter("B-00007", device_number="DN-00007", consumer_number="C-00007", installed_at=T0)
    await store.create_meters(many, at=NOW)

    assert len(await device_numbers(store)) == n + 1
    assignments = {a.meter_id: a for a in await store.assignments()}
    assert len(assignments) == n and all(a.end is None for a in assignments.values())
    assert (assignments["B-00007"].start, assignments["B-00007"].opening_read) == (T0, 41.5)
    assert (assignments["B-00008"].consumer_number, assignments["B-00008"].opening_read) == ("C-00008", None)
    consumer = await store.get_consumer(f"C-{n - 1:05d}")
    assert consumer is not None and consumer.active


async def test_the_configuration_never_takes_a_device_number_another_meter_has(store: Store) -> None:
    await store.create_meters([meter("API-9", device_number="SN-1"), meter("M-2", device_number="SN-3")], at=NOW)
    configured = [(meter("M-1", device_number="SN-1"), frozenset({"meter_id", "device_number"})),
                  (meter("M-2", device_number="SN-1"), frozenset({"meter_id", "device_number"})),
                  (meter("M-3", device_number="SN-4"), frozenset({"meter_id", "device_number"}))]

    clashes = await store.sync_meters(configured, at=NOW)

    assert clashes == [DeviceNumberClash("M-1", Utility.ELECTRICITY, "SN-1", "API-9"),
                       DeviceNumberClash("M-2", Utility.ELECTRICITY, "SN-1", "API-9")]
    # The new meter is registered without it, the existing one keeps its own; the rest as configured.
    assert await device_numbers(store) == {"API-9": "SN-1", "M-1": None, "M-2": "SN-3", "M-3": "SN-4"}
    assert await store.sync_meters(configured, at=NOW) == clashes  # said again at every start, never raised


async def _write_meters_as_an_older_release(backend: str, where: str, meters: list[tuple[Meter, datetime]]) -> None:
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            con.executemany(f"INSERT INTO meters ({sq_rows.METER_COLS}, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [sq_rows.meter_row(m, sq_rows.us(at)) for m, at in meters])
            con.commit()
        finally:
            con.close()
        return
    async with await psycopg.AsyncConnection.connect(where, autocommit=True) as conn:
        await conn.cursor().executemany(f"INSERT INTO meters ({ts_rows.METER_COLS}, created_at, updated_at)"
                                        f" VALUES ({', '.join(['%s'] * 14)})",
                                        [ts_rows.meter_row(m, at) for m, at in meters])


async def test_an_upgraded_store_keeps_its_duplicates_lists_them_and_takes_no_new_one(
        store_target: tuple[str, str]) -> None:  # fmt: skip
    backend, where = store_target
    store = await open_backend(backend, where)
    try:
        await store.migrate(upto=BEFORE[backend])
        # Registered in this order: M-2 first, so it holds SN-1 after the upgrade.
        await _write_meters_as_an_older_release(backend, where, [
            (meter("M-2", device_number="SN-1"), T0), (meter("M-1", device_number="SN-1"), T0 + timedelta(hours=1)),
            (meter("M-3", device_number="SN-1"), T0 + timedelta(hours=2)),
            (meter("W-1", device_number="SN-1", utility=Utility.WATER), T0)])

        await store.migrate()  # does not fail on them, changes none of them

        assert await device_numbers(store) == {"M-1": "SN-1", "M-2": "SN-1", "M-3": "SN-1", "W-1": "SN-1"}
        assert await store.shared_device_numbers() == [
            SharedDeviceNumber(Utility.ELECTRICITY, "SN-1", ("M-2", "M-1", "M-3"))]
        assert [str(f) for f in await find_shared_device_numbers(store)] == [
            f"meter '{m}': device_number 'SN-1' (electricity) is also on meter 'M-2', which holds it; device numbers "
            f"are unique per utility: give one of them another (PATCH /v1/meters/{m} or /v1/meters/M-2)"
            for m in ("M-1", "M-3")]
        with pytest.raises(DeviceNumberTaken, match="already on meter M-2"):
            await store.create_meters([meter("M-4", device_number="SN-1")], at=NOW)
        # A kept duplicate survives other changes; once its number changes, the rule holds for it too.
        await store.update_meter("M-3", {"device_number": "SN-1", "location": "moved"}, at=NOW)
        await store.update_meter("M-3", {"device_number": "SN-3"}, at=NOW)
        with pytest.raises(DeviceNumberTaken, match="already on meter M-2"):
            await store.update_meter("M-3", {"device_number": "SN-1"}, at=NOW)
        assert [s.meter_ids for s in await store.shared_device_numbers()] == [("M-2", "M-1")]
    finally:
        await store.close()


async def test_db_check_lists_shared_device_numbers_and_exits_1(tmp_path: Path) -> None:
    where = tmp_path / "store.db"
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[storage]\nbackend = "sqlite"\nsqlite_path = "{where}"\n')
    store = await open_backend("sqlite", str(where))
    try:
        await store.migrate(upto=BEFORE["sqlite"])
        await _write_meters_as_an_older_release("sqlite", str(where), [
            (meter("M-1", device_number="SN-1"), T0), (meter("M-2", device_number="SN-1"), T0 + timedelta(hours=1))])
    finally:
        await store.close()

    result = await asyncio.to_thread(CliRunner().invoke, cli, ["db", "check", "--config", str(config)])

    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "meter 'M-2': device_number 'SN-1' (electricity) is also on meter 'M-1', which holds it; device numbers are "
        "unique per utility: give one of them another (PATCH /v1/meters/M-2 or /v1/meters/M-1)",
        "identifiers: all OK (2 meter(s) and their assignments checked)",
        "1 meter(s) share a device number with another meter of their utility (kept from before device numbers "
        "were unique; new ones are refused): change one of each pair."]
