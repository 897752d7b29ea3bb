"""A small asyncio face over one paho client for the simulators: QoS 1 publish that waits for the
broker's PUBACK, and subscriptions handed to the event loop. Independent of drivers.mqtt on
purpose (the simulator must not share the code it tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["Incoming", "PaygPublisher", "TlsFiles", "publish_balance", "to_json"]



def to_json(value: Any) -> str:
    """JSON with Decimals written as numbers, digit for digit (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """CA to trust, and optionally a client certificate and key to present."""

    ca: str
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None


Handler = Callable[[Incoming], None]


class PaygPublisher:
    """A QoS 1 publisher whose `publish()` returns once the broker has acknowledged the message.

    paho runs in its own thread and reconnects by itself; messages published while it is
    disconnected stay queued in paho and go out after the reconnect. `subscribe()` registers a
    handler that is called in the event loop; subscriptions are renewed on every connect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        max_inflight: int = 200,
    ) -> None:
        self.host, self.port, self.qos = host, port, qos
        self.client_id = client_id or f"payg-sim-{uuid.uuid4().hex[:8]}"
        self.username, self.password, self.tls = username, password, tls
        self.max_inflight = max_inflight
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        # Bounds what paho holds: it walks its whole outgoing table on every PUBACK (a window of
        # 10,000 publishes ~5x slower than one of 100), and its 16-bit message ids must not wrap
        # onto a message still in flight.
        self._outstanding = asyncio.Semaphore(max_inflight)
        self._handlers: dict[str, Handler] = {}
        self.connected = asyncio.Event()
        self.last_refusal: str | None = None

    async def start(self) -> None:
        """Start connecting (in paho's thread); does not wait for the broker."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 5)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls is not None:
            client.tls_set(ca_certs=self.tls.ca, certfile=self.tls.cert, keyfile=self.tls.key,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
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

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver messages on `topic` (wildcards allowed) to `handler` in the event loop (QoS 1)."""
        self._handlers[topic] = handler
        if self._client is not None and self.connected.is_set():
            self._client.subscribe(topic, qos=1)

    async def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None) -> None:
        """Publish and wait for the PUBACK (QoS 1) or the write (QoS 0)."""
        client = self._client
        if client is None:
            msg = "publisher is not started"
            raise RuntimeError(msg)
        props = None
        if correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation_data
        async with self._outstanding:
            info = client.publish(topic, payload, qos=self.qos, properties=props)
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
        if reason.is_failure:
            self.last_refusal = str(reason)
            return
        if not self._handlers:
            self._call(self.connected.set)
            return
        # "connected" once subscribed too: a command published before the SUBACK would be lost.
        client.subscribe([(topic, 1) for topic in self._handlers])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._call(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._call(self.connected.clear)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._call(self._published, mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        incoming = Incoming(
            topic=msg.topic,
            payload=bytes(msg.payload),
            response_topic=getattr(props, "ResponseTopic", None) if props else None,
            correlation_data=getattr(props, "CorrelationData", None) if props else None,
        )
        for pattern, handler in self._handlers.items():
            if mqtt.topic_matches_sub(pattern, msg.topic):
                self._call(handler, incoming)
                break

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
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Publish one balance message (a dict is written as JSON) and wait for the broker's ack."""
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode()
    else:
        data = to_json(dict(payload)).encode()
    async with PaygPublisher(host, port, qos=qos, username=username, password=password, tls=tls) as publisher:
        async with asyncio.timeout(timeout):
            await publisher.publish(topic.format(meter_id=meter_id), data)
