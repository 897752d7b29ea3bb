"""SPEC §8 scale-out (issue #9 item 5): two `meter-gateway run` processes, one Mosquitto, one
TimescaleDB. Modbus meters are split between the gateways by configuration, with one meter
configured on both (harmless: writes are idempotent); PAYG topics are split by a shared
subscription group. Gateway A is SIGKILLed mid-stream and started again, while an account
system follows the change feed on gateway B's API.

What must hold: the feed delivers every stored reading exactly once, in ingest order; every
PAYG balance update published is stored exactly once; each row says which gateway wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt import PaygFleet
from storage.keys import Scope, new_key
from storage.open import open_store
from tests.fixtures.gateway import broker_connected, eventually, start_gateway_process
from tests.fixtures.modbus import profile
from tests.fixtures.ports import free_port

MODBUS = [f"M-{i:04d}" for i in range(1, 7)]
ONLY_A, BOTH, ONLY_B = MODBUS[:2], MODBUS[2:3], MODBUS[3:]
PAYG = [f"P-{i:04d}" for i in range(1, 11)]


def write_config(path: Path, name: str, *, api_port: int, dsn: str, modbus_port: int, broker: Broker,
                 meters: list[str]) -> Path:  # fmt: skip
    modbus = "".join(f'[[meters]]\nmeter_id = "{m}"\nendpoint = "sim"\nunit = {MODBUS.index(m) + 1}\n' for m in meters)
    payg = "".join(f'[[meters]]\nmeter_id = "{m}"\nprotocol = "mqtt"\npayg = true\n' for m in PAYG)
    path.write_text(f"""
[gateway]
id = "{name}"
data_dir = "{path.parent / name}"
shutdown_deadline = 20.0
[api]
port = {api_port}
[storage]
backend = "timescale"
dsn = "{dsn}"
[modbus]
default_interval = 0.5
[[modbus.endpoints]]
name = "sim"
host = "127.0.0.1"
port = {modbus_port}
timeout = 0.5
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
client_id = "scale-{name}"
share_group = "payg"
currency = "KES"
""" + modbus + payg)
    return path


async def read_key(dsn: str) -> str:
    """A key in the shared database: the account system's credentials (diag: to see B's spool)."""
    key, row = new_key("account-system", frozenset({Scope.READ, Scope.DIAG}), datetime.now(UTC))
    async with await open_store("timescale", dsn=dsn) as store:
        await store.migrate()
        await store.create_api_key(row)
    return key


class FeedFollower:
    """The account system: pulls the change feed from one gateway's API, storing its cursor."""

    def __init__(self, api_port: int, key: str) -> None:
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        self.items: list[dict[str, Any]] = []
        self.cursor: str | None = None
        #: (B's spool items, readings stored, items pulled) at the last `_settled` probe.
        self.last_probe: tuple[int, int, int] | None = None

    async def pull(self) -> int:
        """One page; returns how many items it brought."""
        params: dict[str, Any] = {"limit": 200} | ({"after": self.cursor} if self.cursor else {})
        response = await self.client.get("/v1/readings/feed", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        self.items += page["items"]
        self.cursor = page["next_cursor"]
        return len(page["items"])

    async def follow(self) -> None:
        while True:
            if not await self.pull():
                await asyncio.sleep(0.2)


async def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await (await conn.execute(sql)).fetchall()


async def count_by_gateway(dsn: str, table: str, since: datetime | None = None) -> Counter[str | None]:
    where = f" WHERE ts > '{since.isoformat()}'" if since else ""
    return Counter({g: n for g, n in await query(dsn, f"SELECT gateway_id, count(*) FROM {table}{where} GROUP BY 1")})


@contextlib.asynccontextmanager
async def gateway_process(config: Path, log_path: Path) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Yields a list holding the running process; a test may replace it (after a kill). Every
    process in the list is stopped at exit."""
    with log_path.open("ab") as log:
        procs = [await start_gateway_process(config, log)]
        try:
            yield procs
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()


async def test_two_gateways_one_killed_the_feed_delivers_every_reading_once(
        tmp_path: Path, mqtt_broker: Broker, timescale_dsn: str) -> None:  # fmt: skip
    key = await read_key(timescale_dsn)
    port_a, port_b = free_port(), free_port()
    modbus = SimFleet(profile("generic"), len(MODBUS), seed=5, meter_ids=MODBUS, update_interval=0.25)
    await modbus.start()
    payg = PaygFleet(mqtt_broker.host, mqtt_broker.port, len(PAYG), seed=9, interval=0.1, meter_ids=PAYG)
    config_a = write_config(tmp_path / "a.toml", "gw-a", api_port=port_a, dsn=timescale_dsn, modbus_port=modbus.port,
                            broker=mqtt_broker, meters=ONLY_A + BOTH)  # fmt: skip
    config_b = write_config(tmp_path / "b.toml", "gw-b", api_port=port_b, dsn=timescale_dsn, modbus_port=modbus.port,
                            broker=mqtt_broker, meters=BOTH + ONLY_B)  # fmt: skip
    feed = FeedFollower(port_b, key)
    try:
        async with gateway_process(config_a, tmp_path / "a.log") as a, \
                gateway_process(config_b, tmp_path / "b.log") as b:  # fmt: skip
            for port in (port_a, port_b):
                await eventually(lambda port=port: broker_connected(port), timeout=60)  # type: ignore[misc]
            follower = asyncio.create_task(feed.follow(), name="account-system")
            await payg.start()
            await eventually(lambda: _both_wrote(timescale_dsn, "readings"), timeout=60)
            await eventually(lambda: _both_wrote(timescale_dsn, "balances"), timeout=60)

            a[0].kill()  # SIGKILL: no drain, no clean disconnect; its spool keeps what it accepted
            assert await asyncio.wait_for(a[0].wait(), 30) == -signal.SIGKILL
            killed_at = datetime.now(UTC)
            published_at_kill = len(payg.updates)
            # B goes on alone: its own meters, the shared one, and the PAYG messages of the group.
            await eventually(lambda: len(payg.updates) >= published_at_kill + 100, timeout=60)
            with (tmp_path / "a.log").open("ab") as log:
                a.append(await start_gateway_process(config_a, log))
            await eventually(lambda: broker_connected(port_a), timeout=60)
            restarted_at = datetime.now(UTC)
            await eventually(lambda: _wrote_since(timescale_dsn, "gw-a", restarted_at), timeout=60)
            await payg.stop()
            await modbus.stop()  # no more readings: from here on the feed can catch up and stop moving

            expected = dict(payg.balances)
            await eventually(lambda: _balances_stored(timescale_dsn, len(expected)), timeout=60)
            a[-1].send_signal(signal.SIGTERM)  # A drains its spool into the database as it stops
            assert await asyncio.wait_for(a[-1].wait(), 60) == 0
            await eventually(lambda: _settled(feed, timescale_dsn), timeout=60, every=1.0)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            b[0].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(b[0].wait(), 60) == 0
    finally:
        await payg.stop()
        await modbus.stop()
        await feed.client.aclose()

    for name in ("a.log", "b.log"):
        text = (tmp_path / name).read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]

    stored = await query(timescale_dsn, "SELECT seq, meter_id, channel, ts, gateway_id FROM readings ORDER BY seq")
    # The feed: every stored reading, once, in ingest order; nothing that is not stored.
    seqs = [item["seq"] for item in feed.items]
    assert len(seqs) == len(set(seqs)), "the feed repeated a reading"
    assert seqs == sorted(seqs)
    assert seqs == [row[0] for row in stored], "the feed skipped a reading, or the store holds one twice"
    keys = Counter((i["meter_id"], i["channel"], i["ts"]) for i in feed.items)
    assert max(keys.values()) == 1, "one (meter, channel, ts) came twice"

    # Which gateway wrote what: its own meters, both on the shared one.
    writers: dict[str, set[str | None]] = {}
    for _, meter_id, _, _, gateway_id in stored:
        writers.setdefault(meter_id, set()).add(gateway_id)
    assert all(writers[m] == {"gw-a"} for m in ONLY_A), writers
    assert all(writers[m] == {"gw-b"} for m in ONLY_B), writers
    assert writers[BOTH[0]] <= {"gw-a", "gw-b"}
    # B carried its meters while A was dead; A's meters resumed after its restart.
    times = {m: sorted(ts for _, mid, _, ts, _ in stored if mid == m) for m in MODBUS}
    assert all(any(killed_at < t < restarted_at for t in times[m]) for m in ONLY_B), "B stopped while A was dead"
    assert all(times[m][0] < killed_at and times[m][-1] > restarted_at for m in ONLY_A)

    # PAYG: every published balance update stored exactly once, by one gateway or the other.
    rows = await query(timescale_dsn, "SELECT meter_id, ts, balance, gateway_id FROM balances")
    got = {(m, ts): Decimal(str(bal)) for m, ts, bal, _ in rows}
    assert len(rows) == len(got), "a balance update was stored twice"
    assert got == expected
    assert {g for *_, g in rows} == {"gw-a", "gw-b"}


async def _both_wrote(dsn: str, table: str) -> bool:
    counts = await count_by_gateway(dsn, table)
    return counts["gw-a"] >= 10 and counts["gw-b"] >= 10


async def _wrote_since(dsn: str, gateway_id: str, since: datetime) -> bool:
    return (await count_by_gateway(dsn, "readings", since))[gateway_id] >= 5


async def _balances_stored(dsn: str, n: int) -> bool:
    return int((await query(dsn, "SELECT count(*) FROM balances"))[0][0]) >= n


async def _settled(feed: FeedFollower, dsn: str) -> bool:
    """B's spool is empty and the feed has caught up with the table, twice in a row (polled
    once a second): nothing is still on its way from either gateway."""
    response = await feed.client.get("/v1/diag/status")
    assert response.status_code == 200, response.text
    total = (await query(dsn, "SELECT count(*) FROM readings"))[0][0]
    now = (response.json()["spool"]["items"], total, len(feed.items))
    settled = now[0] == 0 and now[1] == now[2] and feed.last_probe == now
    feed.last_probe = now
    return settled
