"""SPEC §7: a full disk pauses intake, never crashes the gateway, and everything drains once space
returns. A real gateway keeps its data (spool, embedded store, key mirror) on a small tmpfs that the
test fills; PAYG meters publish at QoS 1 to a real Mosquitto and Modbus meters are polled meanwhile."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from gateway.config.profiles import load_profiles
from gateway.model import Batch, EventKind
from gateway.runtime.gateway import Gateway
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.publisher import PaygPublisher
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.tmpfs import fill, mounted_tmpfs

PAYG = ["P-0001", "P-0002"]
FAR = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


class Accepted:
    """Every reading the spool committed (an `on_append` observer): what must reach the store."""

    def __init__(self) -> None:
        self.readings: set[tuple[str, str, datetime, float]] = set()

    def __call__(self, _id: int, batch: Batch) -> None:
        self.readings |= {(r.meter_id, r.channel.value, r.ts, r.value) for r in batch.readings}


class Meters:
    """PAYG updates published at QoS 1 (each acknowledged by the broker), and what they said."""

    def __init__(self, publisher: PaygPublisher) -> None:
        self.publisher = publisher
        self.sent: dict[tuple[str, datetime], Decimal] = {}
        self._t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)

    async def publish(self, n: int) -> None:
        for _ in range(n):
            k = len(self.sent)
            meter_id, ts = PAYG[k % 2], self._t0 + timedelta(seconds=k)
            balance = Decimal(f"{5000 - k}.25")
            doc = {"ts": ts.isoformat().replace("+00:00", "Z"), "balance": str(balance), "currency": "KES"}
            await self.publisher.publish(f"payg/{meter_id}/balance", json.dumps(doc).encode())
            self.sent[(meter_id, ts)] = balance


async def stored_balances(gw: Gateway) -> dict[tuple[str, datetime], Decimal]:
    assert gw.store is not None
    rows = [r for m in PAYG for r in await gw.store.balances(m, start=FAR[0], end=FAR[1], limit=100_000)]
    found = {(r.meter_id, r.ts): r.balance for r in rows}
    assert len(found) == len(rows), "a balance update was stored twice"
    return found


async def stored_readings(gw: Gateway) -> list[tuple[str, str, datetime, float]]:
    assert gw.store is not None
    return [(r.meter_id, r.channel.value, r.ts, r.value) for m in ("M-0001", "M-0002")
            for r in await gw.store.readings(m, start=FAR[0], end=FAR[1], limit=100_000)]


async def all_stored(gw: Gateway, meters: Meters) -> bool:
    return len(await stored_balances(gw)) >= len(meters.sent)


async def all_readings_stored(gw: Gateway, accepted: Accepted) -> bool:
    return accepted.readings <= set(await stored_readings(gw))


def polls_made(gw: Gateway) -> int:
    return sum(h.polls for p in gw.pollers.values() for h in p.health().values())


def skipped_slots(gw: Gateway) -> int:
    return sum(h.skipped for p in gw.pollers.values() for h in p.health().values())


async def test_a_full_disk_pauses_intake_and_everything_drains_once_space_returns(tmp_path: Path,
                                                                               mqtt_broker: Broker) -> None:
    accepted = Accepted()
    with mounted_tmpfs(tmp_path / "disk", "24m") as disk:
        async with SimFleet(load_profiles()["generic"], 2, seed=5, speedup=60) as fleet:
            await fleet.stop()  # no readings until the observer is attached
            cfg = gateway_config(disk / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.2,
                                 broker_port=mqtt_broker.port, payg_ids=PAYG, gateway={"queue_size": 10})
            async with running_gateway(cfg) as (gw, api), PaygPublisher(mqtt_broker.host, mqtt_broker.port) as pub:
                assert gw.spool is not None and gw.subscriber is not None
                spool = gw.spool
                spool.on_append.append(accepted)
                await fleet.start()
                await gw.subscriber.wait_connected(30)
                meters = Meters(pub)
                await meters.publish(20)
                await eventually(lambda: all_stored(gw, meters))

                filler = fill(disk)
                for _ in range(40):  # the files' slack (SQLite reuses its WAL) goes first
                    await meters.publish(10)
                    await asyncio.sleep(0.1)
                    if spool.stats().blocked:
                        break
                assert spool.stats().blocked == "disk full"

                ready = await api.get("/readyz")
                assert ready.status_code == 503
                spool_check = ready.json()["checks"]["spool"]
                assert not spool_check["ok"] and spool_check["detail"].startswith("cannot write: disk full since ")
                assert (await api.get("/healthz")).status_code == 200
                metrics = (await api.get("/metrics")).text
                assert "meter_gateway_spool_blocked 1.0" in metrics
                events = (await api.get("/v1/diag/events")).text
                assert "spool_blocked" in events, events
                # Polls pause: each poller waits on the pipeline's full queue (2 meters, a poll every 0.2 s
                # each: 10 polls a second unimpeded); the slots they miss are counted when they go on.
                polls, skipped = polls_made(gw), skipped_slots(gw)
                # MQTT: nothing stored, nothing acknowledged; the broker keeps what comes meanwhile.
                await meters.publish(100)
                await asyncio.sleep(1.0)
                assert polls_made(gw) - polls <= 2
                assert spool.stats().blocked == "disk full"

                filler.unlink()
                await eventually(lambda: all_stored(gw, meters), timeout=60)
                await eventually(lambda: spool.stats().rows == 0 and spool.stats().blocked is None, timeout=60)
                await eventually(lambda: skipped_slots(gw) > skipped)
                await fleet.stop()
                # The polls already queued before the stop are accepted after it: wait for those too.
                await eventually(lambda: all_readings_stored(gw, accepted), timeout=60)
                assert (await api.get("/readyz")).status_code == 200

                got = await stored_balances(gw)
                readings = await stored_readings(gw)
                assert gw.store is not None
                kinds = [e.kind for e in await gw.store.events(limit=1000)
                         if e.kind in (EventKind.SPOOL_BLOCKED, EventKind.SPOOL_RESUMED)]
                dead = await gw.store.deadletters(limit=10)
    assert got == meters.sent  # every update published, stored once with its balance
    assert len(readings) == len(set(readings)) and set(readings) == accepted.readings
    assert sorted(kinds) == [EventKind.SPOOL_BLOCKED, EventKind.SPOOL_RESUMED]
    assert dead == []  # the full disk turned nothing into a dead letter


async def test_stopped_while_the_disk_is_full_nothing_unstored_was_acknowledged(tmp_path: Path,
                                                                               mqtt_broker: Broker) -> None:
    """SIGTERM's path while intake is paused: the gateway stops within its deadline; what it had not
    stored it had not acknowledged, so the broker hands it to the next run, which stores it once."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as disk:
        cfg = gateway_config(disk / "gw", broker_port=mqtt_broker.port, payg_ids=PAYG,
                             gateway={"queue_size": 10, "shutdown_deadline": 2.0})
        async with PaygPublisher(mqtt_broker.host, mqtt_broker.port) as pub:
            meters = Meters(pub)
            async with running_gateway(cfg) as (gw, _):
                assert gw.spool is not None and gw.subscriber is not None
                spool = gw.spool
                await gw.subscriber.wait_connected(30)
                await meters.publish(10)
                await eventually(lambda: all_stored(gw, meters))
                filler = fill(disk)
                for _ in range(40):
                    await meters.publish(10)
                    await asyncio.sleep(0.1)
                    if spool.stats().blocked:
                        break
                assert spool.stats().blocked == "disk full"
                await meters.publish(50)
            # Stopped (the fixture waits for the gateway's task, and fails on an exception from it).
            filler.unlink()
            async with running_gateway(cfg) as (gw, _):
                await eventually(lambda: all_stored(gw, meters), timeout=60)
                await asyncio.sleep(0.3)  # a late duplicate would arrive now
                got = await stored_balances(gw)
    assert got == meters.sent
