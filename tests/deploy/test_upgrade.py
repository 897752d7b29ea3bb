"""Upgrades (issue #9 item 4, SPEC §7): migrations are forward-only and run at start, and what
an older release left in the spool drains into the new schema.

The store is built as release 0.1.0 left it: schema version 3, rows written with that
release's columns. Its spool holds batches in that release's spool format, written here
as literal JSON rather than with today's encoder, so that a change of the format that
breaks old spools fails this test. Then today's gateway starts on both, and the account
system's change feed must deliver the old rows and the drained ones, each exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.spool.codec import decode
from storage.sqlite import rows as sq_rows
from storage.timescale import rows as ts_rows
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.storage.backends import open_backend

PREVIOUS_SCHEMA = 3
#: SQLite's version 5 is the covering index of one meter's readings (no TimescaleDB counterpart);
#: the commands' keys are SQLite's 6 and TimescaleDB's 5; unique device numbers and verification keys
#: SQLite's 7 and TimescaleDB's 6; special reads SQLite's 8 and TimescaleDB's 7; the readings' audit
#: trail SQLite's 9 and TimescaleDB's 8; SQLite's 10 drops its readings_meter_ts index (issue 26).
LATEST_SCHEMA = {"sqlite": 10, "timescale": 8}

#: One spool record exactly as release 0.1.0 wrote it (storage/spool/codec.py of that release):
#: a reading with every field set, a balance update, an event and a dead letter.
RELEASE_0_1_RECORD = (
    '{"r":[["M-ROUND","volume","2024-03-01T14:30:15.654321+02:00",0.30000000000000004,"cumulative",4130,'
    '"suspect","mqtt","2024-03-01T12:30:16.000001+00:00","rollover at modulus 100000"]],'
    '"b":[["P-1","2024-03-01T12:00:00.123456+00:00","12.34","KES","50.00",true,"-0.005","disconnected",'
    '"1000.10","2024-02-27T12:00:00.123449+00:00",true,false,"2024-03-01T12:00:01.123456+00:00"]],'
    '"e":[["2024-03-01T12:00:00.123456+00:00","M-1","comm_lost","warning","comm_lost at +0 min",true]],'
    '"d":[["2024-03-01T12:00:00.123456+00:00","mqtt","payg/P-9/balance","malformed_json",'
    '"Expecting value: line 1 column 1 (char 0)","{\\"balance\\": ",null]]}'
)
#: The spool table of release 0.1.0.
RELEASE_0_1_SPOOL = """CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL, items INTEGER NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL)"""

T0 = datetime(2026, 3, 1, tzinfo=UTC)
OLD_METER, SPOOLED_METER = "M-OLD", "M-SPOOLED"


def reading_record(meter_id: str, minute: int, value: float) -> list[Any]:
    """A reading in release 0.1.0's spool format (a flat array, see RELEASE_0_1_RECORD)."""
    ts = (T0 + timedelta(minutes=minute)).isoformat()
    return [meter_id, "energy_import", ts, value, "cumulative", 0, "valid", "modbus", ts, None]


def spooled_batches() -> Iterator[bytes]:
    yield RELEASE_0_1_RECORD.encode()
    for n in range(5):
        records = [reading_record(SPOOLED_METER, n * 10 + i, 100.0 + n * 10 + i) for i in range(10)]
        yield json.dumps({"r": records, "b": [], "e": [], "d": []}, separators=(",", ":")).encode()


def write_old_spool(path: Path) -> int:
    """The spool as the old gateway left it (stopped before its forwarder caught up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute(RELEASE_0_1_SPOOL)
        items = 0
        for body in spooled_batches():
            n = len(decode(body))
            items += n
            con.execute("INSERT INTO spool (body, items, size, created) VALUES (?, ?, ?, ?)",
                        (body, n, len(body), time.time()))  # fmt: skip
        con.commit()
    finally:
        con.close()
    return items


def old_readings() -> list[tuple[Any, ...]]:
    """Rows of OLD_METER in release 0.1.0's reading columns (the same on both backends)."""
    return [(OLD_METER, "energy_import", T0 + timedelta(minutes=m), 50.0 + m, "cumulative", 0, "valid", "modbus",
             T0 + timedelta(minutes=m), None) for m in range(20)]  # fmt: skip


async def build_old_store(backend: str, where: str) -> None:
    store = await open_backend(backend, where)
    try:
        await store.migrate(upto=PREVIOUS_SCHEMA)
    finally:
        await store.close()
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            con.executemany(f"INSERT INTO readings ({sq_rows.READING_IN}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(*r[:2], sq_rows.us(r[2]), *r[3:8], sq_rows.us(r[8]), r[9]) for r in old_readings()])
            con.commit()
        finally:
            con.close()
        return
    async with await psycopg.AsyncConnection.connect(where) as conn:
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO readings ({ts_rows.READING_IN}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                old_readings())


async def schema_versions(backend: str, where: str) -> list[int]:
    sql = "SELECT version FROM schema_migrations ORDER BY version"
    if backend == "sqlite":
        con = sqlite3.connect(where)
        try:
            return [int(v) for (v,) in con.execute(sql)]
        finally:
            con.close()
    async with await psycopg.AsyncConnection.connect(where) as conn:
        return [int(v) for (v,) in await (await conn.execute(sql)).fetchall()]


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_upgrade_drains_the_old_spool_into_the_new_schema(backend: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:  # fmt: skip
    data = tmp_path / "data"
    where = str(data / "store.db") if backend == "sqlite" else request.getfixturevalue("timescale_dsn")
    data.mkdir()
    await build_old_store(backend, where)
    assert await schema_versions(backend, where) == list(range(1, PREVIOUS_SCHEMA + 1))
    spooled_items = write_old_spool(data / "spool.db")

    cfg = gateway_config(data, backend=backend, dsn=None if backend == "sqlite" else where,
                         gateway={"id": "edge-upgraded"})  # fmt: skip
    async with running_gateway(cfg) as (gw, api):
        assert gw.spool is not None
        await eventually(lambda: gw.migrated and gw.spool is not None and gw.spool.stats().rows == 0, timeout=60)
        feed: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 7} | ({"after": cursor} if cursor else {})
            response = await api.get("/v1/readings/feed", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            if not page["items"]:
                break
            feed += page["items"]
            cursor = page["next_cursor"]
        assert gw.store is not None
        balance = await gw.store.latest_balance("P-1")
        events = await gw.store.events(meter_id="M-1")

    assert await schema_versions(backend, where) == list(range(1, LATEST_SCHEMA[backend] + 1))
    # Every row once, in ingest order: the old ones first, with the ids the old release gave them.
    seqs = [item["seq"] for item in feed]
    assert seqs == sorted(set(seqs))
    got = [(i["meter_id"], i["ts"], i["value"], i["gateway_id"]) for i in feed]
    old = [(OLD_METER, r[2], r[3], None) for r in old_readings()]
    spooled = [(SPOOLED_METER, T0 + timedelta(minutes=m), 100.0 + m, "edge-upgraded") for m in range(50)]
    spooled.append(("M-ROUND", datetime(2024, 3, 1, 12, 30, 15, 654321, tzinfo=UTC), 0.1 + 0.2, "edge-upgraded"))
    assert len(got) == len(old) + len(spooled) == spooled_items - 3 + len(old)
    assert [(m, datetime.fromisoformat(ts), v, g) for m, ts, v, g in got[: len(old)]] == old
    assert sorted((m, datetime.fromisoformat(ts), v, g) for m, ts, v, g in got[len(old):]) == sorted(spooled)
    round_trip = next(i for i in feed if i["meter_id"] == "M-ROUND")
    assert (round_trip["status"], round_trip["source"], sorted(round_trip["quality"])) == (
        "suspect", "mqtt", ["estimated", "gap", "rollover"])
    # The old record's balance update and event arrived too.
    assert balance is not None and (balance.balance, balance.currency) == (Decimal("12.34"), "KES")
    assert [(e.kind.value, e.detail) for e in events] == [("comm_lost", "comm_lost at +0 min")]
