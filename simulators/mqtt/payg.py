"""A fleet of simulated PAYG meters publishing balance updates over MQTT and answering commands.

Every `interval` seconds each meter advances one step (see simulators.mqtt.meter) and publishes
its balance if it is due (every `report_every` rounds) or if something changed (a top-up, the
relay, emergency credit): "at an interval and on change". Commands (top-up, disconnect,
reconnect) on the command topic are carried out and answered on the reply topic with the
correlation id. The same seed gives the same data; timestamps come from `clock`.

Faults, set per meter while running (`set_fault`):

    malformed_json   the JSON is cut off mid-document
    wrong_type       "balance": "lots"
    missing_field    no "balance"
    oversized        padded beyond 16 KiB
    future_ts        stamped a day ahead
    duplicate        every update sent twice
    out_of_order     every other update held back and sent after the next one
    burst            `burst_size` updates at once (distinct timestamps a millisecond apart)
    silence          sends nothing, answers no command
    no_reply         publishes normally, answers no command
    reject_commands  answers every command "failed"

Independent of gateway.normalise on purpose: it writes the documented JSON schema itself, so a
parser bug is not mirrored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from simulators.mqtt.meter import SimPaygMeter
from simulators.mqtt.publisher import Incoming, PaygPublisher, TlsFiles, publish_balance, to_json

__all__ = ["FAULTS", "PaygFleet", "PaygPublisher", "SimPaygMeter", "publish_balance"]

log = logging.getLogger(__name__)

FAULTS = frozenset({
    "malformed_json", "wrong_type", "missing_field", "oversized", "future_ts", "duplicate", "out_of_order",
    "burst", "silence", "no_reply", "reject_commands",
})
#: Faults whose messages the gateway must reject (dead letters), not store.
BAD_PAYLOAD_FAULTS = frozenset({"malformed_json", "wrong_type", "missing_field", "oversized", "future_ts"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _template_sub(template: str) -> str:
    return "/".join("+" if "{meter_id}" in level else level for level in template.split("/"))


class PaygFleet:
    """N simulated PAYG meters on one MQTT connection.

    `published[meter_id]` counts every message the broker acknowledged (faulty ones and
    duplicates included); `updates` lists (meter_id, ts) of each distinct valid update in the
    order sent, and `balances[(meter_id, ts)]` its balance, for tests to compare with the store.
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
        command_topic: str = "payg/{meter_id}/command",
        reply_topic: str = "payg/{meter_id}/command/reply",
        answer_commands: bool = True,
        currency: str = "KES",
        qos: int = 1,
        clock: Callable[[], datetime] = _utcnow,
        report_every: int = 1,
        step_s: float = 900.0,
        burst_size: int = 10,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        ids = list(meter_ids) if meter_ids is not None else [f"P-{i + 1:05d}" for i in range(n_meters)]
        problems = []
        if len(ids) != n_meters:
            problems.append(f"n_meters={n_meters} but {len(ids)} meter_ids given")
        for name, template in (("topic", topic), ("command_topic", command_topic), ("reply_topic", reply_topic)):
            if "{meter_id}" not in template:
                problems.append(f"{name} {template!r} must contain {{meter_id}}")
        if report_every < 1 or burst_size < 2 or interval <= 0:
            problems.append("report_every >= 1, burst_size >= 2 and interval > 0 are needed")
        if problems:
            msg = "PaygFleet: " + "; ".join(problems)
            raise ValueError(msg)
        self.host, self.port = broker_host, broker_port
        self.interval = interval
        self.topic = topic
        self.command_topic = command_topic
        self.reply_topic = reply_topic
        self.answer_commands = answer_commands
        self.currency = currency
        self.clock = clock
        self.report_every = report_every
        self.burst_size = burst_size
        self.meters = {mid: SimPaygMeter.create(mid, seed, step_s=step_s) for mid in ids}
        self._topics = {mid: topic.format(meter_id=mid) for mid in ids}
        self._by_command_topic = {command_topic.format(meter_id=mid): mid for mid in ids}
        self.published: dict[str, int] = dict.fromkeys(ids, 0)
        self.updates: list[tuple[str, datetime]] = []
        self.balances: dict[tuple[str, datetime], Decimal] = {}
        self.commands: list[dict[str, object]] = []  #: commands received, with what the meter answered
        self.rounds = 0
        self._publisher = PaygPublisher(broker_host, broker_port, qos=qos, client_id=client_id,
                                        username=username, password=password, tls=tls)
        self._main: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._incoming: asyncio.Queue[Incoming] = asyncio.Queue()

    def set_fault(self, meter_id: str, fault: str | None) -> None:
        """Set (or clear, with None) a meter's fault; it applies from the next update on."""
        if fault is not None and fault not in FAULTS:
            msg = f"unknown fault {fault!r} for meter {meter_id} (known: {', '.join(sorted(FAULTS))})"
            raise ValueError(msg)
        if meter_id not in self.meters:
            msg = f"unknown meter {meter_id!r} (the fleet has {len(self.meters)} meters)"
            raise ValueError(msg)
        self.meters[meter_id].fault = fault

    # -- what a meter sends -----------------------------------------------------------------------

    def payload(self, meter: SimPaygMeter, ts: datetime) -> bytes | None:
        """What the meter sends now given its fault, or None when silent."""
        msg = meter.message(ts, self.currency)
        fault = meter.fault
        if fault == "silence":
            return None
        if fault == "malformed_json":
            return to_json(msg).encode()[:-7]  # cut off mid-document
        if fault == "wrong_type":
            msg["balance"] = "lots"
        elif fault == "missing_field":
            del msg["balance"]
        elif fault == "oversized":
            msg["padding"] = "x" * 20_000
        elif fault == "future_ts":
            msg["ts"] = (ts + timedelta(days=1)).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return to_json(msg).encode()

    def _messages(self, meter: SimPaygMeter, ts: datetime) -> list[tuple[bytes, datetime, Decimal | None]]:
        """(payload, ts, balance if it counts as a valid distinct update) for one meter this round."""
        data = self.payload(meter, ts)
        if data is None:
            return []
        fault = meter.fault
        balance = meter.balance if fault not in BAD_PAYLOAD_FAULTS else None
        if fault == "duplicate":
            return [(data, ts, balance), (data, ts, None)]
        if fault == "burst":
            out = [(data, ts, balance)]
            for i in range(1, self.burst_size):
                at = ts + timedelta(milliseconds=i)
                meter.step(at)
                out.append((self.payload(meter, at) or b"", at, meter.balance))
            return out
        if fault == "out_of_order":
            if meter.held is None:
                meter.held = (data, ts, meter.balance)
                return []
            held, meter.held = meter.held, None
            return [(data, ts, balance), held]
        return [(data, ts, balance)]

    async def publish_round(self) -> int:
        """Advance every meter one step and publish what is due; returns once the broker has all."""
        ts = self.clock()
        self.rounds += 1
        periodic = self.rounds % self.report_every == 0 or self.rounds == 1
        sends: list[tuple[str, bytes, datetime, Decimal | None]] = []
        for meter in self.meters.values():
            changed = meter.step(ts)
            if periodic or changed or meter.fault in ("burst", "out_of_order"):
                sends.extend((meter.meter_id, d, t, v) for d, t, v in self._messages(meter, ts))
        await asyncio.gather(*(self._send(mid, data, at, valid) for mid, data, at, valid in sends))
        return len(sends)

    async def _send(self, meter_id: str, data: bytes, ts: datetime, balance: Decimal | None) -> None:
        # Counted once the broker has it, so a round cut short by stop() is still counted right.
        await self._publisher.publish(self._topics[meter_id], data)
        self.published[meter_id] += 1
        if balance is not None:
            self.updates.append((meter_id, ts))
            self.balances[(meter_id, ts)] = balance.quantize(Decimal("0.01"))

    # -- commands ------------------------------------------------------------------------------------

    def _on_command(self, message: Incoming) -> None:
        self._incoming.put_nowait(message)

    async def _answer_commands(self) -> None:
        while True:
            message = await self._incoming.get()
            try:
                await self.answer(message)
            except Exception:  # a simulator must survive a bad command; the gateway's tests see it
                log.exception("simulated meter could not handle the command on %s", message.topic)

    async def answer(self, message: Incoming) -> None:
        """Carry out one command and reply; then publish the balance at once (it changed)."""
        meter = self.meters.get(self._by_command_topic.get(message.topic, ""))
        if meter is None:
            return
        try:
            doc = json.loads(message.payload, parse_float=Decimal)
            cid = str(doc.get("correlation_id") or (message.correlation_data or b"").decode())
            kind = str(doc["command"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.commands.append({"meter_id": meter.meter_id, "payload": message.payload, "status": "unreadable"})
            return
        record: dict[str, object] = {"meter_id": meter.meter_id, "correlation_id": cid, "command": kind}
        self.commands.append(record)
        if meter.fault in ("silence", "no_reply"):
            record["status"] = "no reply"
            return
        status, detail = "acknowledged", None
        if meter.fault == "reject_commands":
            status, detail = "failed", "rejected by the meter"
        elif kind == "topup":
            try:
                amount = Decimal(str(doc["amount"]))
            except (KeyError, InvalidOperation):
                amount = Decimal(0)
            if amount > 0:
                meter.topup(amount, self.clock())
            else:
                status, detail = "failed", "no valid amount"
        elif kind == "disconnect":
            meter.disconnect()
        elif kind == "reconnect":
            meter.reconnect()
        else:
            status, detail = "failed", f"unknown command {kind!r}"
        record["status"] = status
        reply: dict[str, object] = {"correlation_id": cid, "status": status}
        if detail:
            reply["detail"] = detail
        reply_to = doc.get("reply_to") or message.response_topic or self.reply_topic.format(meter_id=meter.meter_id)
        await self._publisher.publish(str(reply_to), to_json(reply).encode(),
                                      correlation_data=message.correlation_data)
        if status == "acknowledged" and meter.fault is None:
            ts = self.clock()
            data = self.payload(meter, ts)
            if data is not None:
                await self._send(meter.meter_id, data, ts, meter.balance)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish a round every `interval` seconds until cancelled or stop() is called.

        stop() lets the round in flight finish, so every message the broker took is counted in
        `updates` (a cancelled round could leave one delivered but uncounted).
        """
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stopping.is_set():
            await self.publish_round()
            next_at += self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, next_at - loop.time()))

    async def _serve(self, run: bool) -> None:
        async with asyncio.TaskGroup() as tg:
            commands = tg.create_task(self._answer_commands(), name="payg-fleet-commands") \
                if self.answer_commands else None
            if run:
                await self.run()
            else:
                await self._stopping.wait()
            if commands is not None:
                commands.cancel()

    async def start(self, *, run: bool = True) -> None:
        """Connect and answer commands; with run=True also publish every interval until stop()."""
        if self.answer_commands:
            self._publisher.subscribe(_template_sub(self.command_topic), self._on_command)
        self._stopping.clear()
        await self._publisher.start()
        self._main = asyncio.create_task(self._serve(run), name="payg-fleet")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the round in flight (so it is counted), stop answering commands, disconnect."""
        task, self._main = self._main, None
        self._stopping.set()
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=timeout)
            if not done:
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
