"""A fleet of simulated PAYG (prepayment) meters publishing balance updates over MQTT.

Each meter drains its credit with consumption, is topped up now and then, opens its relay at zero
credit and closes it again after a top-up. The same seed gives the same balances, top-ups and relay
changes (timestamps come from `clock`). Faults can be set per meter while running:
"malformed_json", "wrong_type", "duplicate" (each update sent twice), "silence".

Independent of gateway.normalise on purpose: it writes the documented JSON schema itself, so a
parser bug is not mirrored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["FAULTS", "PaygFleet", "PaygPublisher", "publish_balance"]

log = logging.getLogger(__name__)

FAULTS = frozenset({"malformed_json", "wrong_type", "duplicate", "silence"})
_CENT = Decimal("0.01")
#: paho numbers messages 1..65535 and wraps; more in flight than this would reuse a live mid.
_MAX_OUTSTANDING = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _json(value: Any) -> str:
    """JSON with Decimals written as numbers, digit for digit (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


class PaygPublisher:
    """A QoS 1 publisher whose `publish()` returns once the broker has acknowledged the message.

    paho runs in its own thread and reconnects by itself; messages published while it is
    disconnected stay queued in paho and go out after the reconnect.
    """

    def __init__(self, host: str, port: int, *, client_id: str | None = None, qos: int = 1) -> None:
        self.host, self.port, self.qos = host, port, qos
        self.client_id = client_id or f"payg-sim-{uuid.uuid4().hex[:8]}"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        self._outstanding = asyncio.Semaphore(_MAX_OUTSTANDING)
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start connecting (in paho's thread); does not wait for the broker."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish and wait for the PUBACK (QoS 1) or the write (QoS 0)."""
        client = self._client
        if client is None:
            msg = "publisher is not started"
            raise RuntimeError(msg)
        async with self._outstanding:
            info = client.publish(topic, payload, qos=self.qos)
            # NO_CONN: paho keeps a QoS>0 message and sends it after reconnecting; anything else
            # (e.g. QUEUE_SIZE when a mid is still in flight after a wrap) means it was not taken.
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                msg = f"publish to {topic} refused by paho: {mqtt.error_string(info.rc)}"
                raise RuntimeError(msg)
            if info.mid in self._early:
                self._early.discard(info.mid)
                return
            future = asyncio.get_running_loop().create_future()
            self._waiting[info.mid] = future
            try:
                await future
            finally:
                self._waiting.pop(info.mid, None)

    # paho's thread -> loop: only through call_soon_threadsafe (asyncio is not thread-safe).
    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self._call(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._call(self.connected.clear)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._call(self._published, mid)

    def _published(self, mid: int) -> None:
        future = self._waiting.pop(mid, None)
        if future is None:
            self._early.add(mid)  # acked before publish() registered its future
        elif not future.done():
            future.set_result(None)

    async def __aenter__(self) -> PaygPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def publish_balance(
    host: str,
    port: int,
    meter_id: str,
    payload: Mapping[str, Any] | bytes | str,
    *,
    topic: str = "payg/{meter_id}/balance",
    qos: int = 1,
    timeout: float = 10.0,
) -> None:
    """Publish one balance message (a dict is written as JSON) and wait for the broker's ack."""
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode()
    else:
        data = _json(dict(payload)).encode()
    async with PaygPublisher(host, port, qos=qos) as publisher:
        async with asyncio.timeout(timeout):
            await publisher.publish(topic.format(meter_id=meter_id), data)


@dataclass(slots=True)
class SimPaygMeter:
    """One meter's credit account. `step()` advances it one interval, deterministically per seed."""

    meter_id: str
    rng: random.Random
    balance: Decimal
    rate: Decimal  # credit used per interval with the relay closed
    debt: Decimal
    emergency_credit: Decimal = Decimal("10.00")
    relay: str = "connected"
    last_topup_amount: Decimal | None = None
    last_topup_ts: datetime | None = None
    fault: str | None = None

    @classmethod
    def create(cls, meter_id: str, seed: int) -> SimPaygMeter:
        rng = random.Random(f"{seed}:{meter_id}")
        return cls(
            meter_id=meter_id,
            rng=rng,
            balance=Decimal(rng.randint(500, 20000)) / 100,
            rate=Decimal(rng.randint(20, 300)) / 100,
            debt=Decimal(rng.choice([0, 0, 0, 2500, 5000])) / 100,
        )

    def step(self, ts: datetime) -> None:
        rng = self.rng
        if self.relay == "connected":
            used = (self.rate * Decimal(rng.randint(80, 120)) / 100).quantize(_CENT)
            self.balance = max(Decimal("0.00"), self.balance - used)
        # Customers top up now and then, more often once the lights are out.
        chance = 0.25 if self.balance <= 0 else 0.02
        if rng.random() < chance:
            amount = Decimal(rng.choice([50, 100, 200, 500]))
            recovered = min(self.debt, (amount * Decimal("0.10")).quantize(_CENT))
            self.debt -= recovered
            self.balance += amount - recovered
            self.last_topup_amount, self.last_topup_ts = amount, ts
        self.relay = "disconnected" if self.balance <= 0 else "connected"

    def message(self, ts: datetime) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "ts": ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "balance": self.balance.quantize(_CENT),
            "currency": "",
            "emergency_credit": self.emergency_credit,
            "emergency_credit_in_use": False,
            "debt": self.debt.quantize(_CENT),
            "relay": self.relay,
        }
        if self.last_topup_amount is not None and self.last_topup_ts is not None:
            msg["last_topup"] = {
                "amount": self.last_topup_amount,
                "ts": self.last_topup_ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            }
        return msg


class PaygFleet:
    """N simulated PAYG meters on one MQTT connection, one update per meter per interval.

    `published[meter_id]` counts every message sent (faulty ones and duplicates included);
    `updates` lists (meter_id, ts) of each distinct valid update, in order, for tests to compare
    with what the gateway stored.
    """

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        n_meters: int,
        *,
        seed: int = 1,
        interval: float = 1.0,
        meter_ids: list[str] | None = None,
        topic: str = "payg/{meter_id}/balance",
        currency: str = "KES",
        qos: int = 1,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        ids = list(meter_ids) if meter_ids is not None else [f"P-{i + 1:05d}" for i in range(n_meters)]
        if len(ids) != n_meters:
            msg = f"PaygFleet: n_meters={n_meters} but {len(ids)} meter_ids given"
            raise ValueError(msg)
        if "{meter_id}" not in topic:
            msg = f"PaygFleet: topic {topic!r} must contain {{meter_id}}"
            raise ValueError(msg)
        self.host, self.port = broker_host, broker_port
        self.interval = interval
        self.topic = topic
        self.currency = currency
        self.clock = clock
        self.meters = {mid: SimPaygMeter.create(mid, seed) for mid in ids}
        self.published: dict[str, int] = dict.fromkeys(ids, 0)
        self.updates: list[tuple[str, datetime]] = []
        self.rounds = 0
        self._publisher = PaygPublisher(broker_host, broker_port, qos=qos)
        self._task: asyncio.Task[None] | None = None

    def set_fault(self, meter_id: str, fault: str | None) -> None:
        """Set (or clear, with None) a meter's fault; it applies from the next update on."""
        if fault is not None and fault not in FAULTS:
            msg = f"unknown fault {fault!r} for meter {meter_id} (known: {', '.join(sorted(FAULTS))})"
            raise ValueError(msg)
        self.meters[meter_id].fault = fault

    def payload(self, meter: SimPaygMeter, ts: datetime) -> bytes | None:
        """What the meter sends now given its fault, or None when silent."""
        msg = meter.message(ts)
        msg["currency"] = self.currency
        if meter.fault == "silence":
            return None
        if meter.fault == "malformed_json":
            return _json(msg).encode()[:-7]  # cut off mid-document
        if meter.fault == "wrong_type":
            msg["balance"] = "lots"
        return _json(msg).encode()

    async def publish_round(self) -> int:
        """Advance every meter one interval and publish; returns once all are acked by the broker."""
        ts = self.clock()
        self.rounds += 1
        sends: list[tuple[str, bytes, bool]] = []
        for meter in self.meters.values():
            meter.step(ts)
            data = self.payload(meter, ts)
            if data is None:
                continue
            valid = meter.fault in (None, "duplicate")
            sends.append((meter.meter_id, data, valid))
            if meter.fault == "duplicate":
                sends.append((meter.meter_id, data, False))
        await asyncio.gather(*(self._send(mid, data, ts, valid) for mid, data, valid in sends))
        return len(sends)

    async def _send(self, meter_id: str, data: bytes, ts: datetime, valid: bool) -> None:
        # Counted once the broker has it, so a round cut short by stop() is still counted right.
        await self._publisher.publish(self.topic.format(meter_id=meter_id), data)
        self.published[meter_id] += 1
        if valid:
            self.updates.append((meter_id, ts))

    async def run(self) -> None:
        """Publish a round every `interval` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.publish_round()
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def start(self, *, run: bool = True) -> None:
        """Connect; with run=True also publish every interval in the background until stop()."""
        await self._publisher.start()
        if run:
            self._task = asyncio.create_task(self.run(), name="payg-fleet")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._publisher.stop()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._publisher.connected.wait()

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    async def __aenter__(self) -> PaygFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
