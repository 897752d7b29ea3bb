"""An asyncio adapter over paho-mqtt 2.x with a persistent session and application-controlled acks.

Shaped like aiomqtt (an async context manager, messages as an async iterator) but it owns its
reconnection, because aiomqtt has no manual ack (empicano/aiomqtt#345) and SPEC §2 acks a message
only once its data is durable::

    async with MqttConnection(settings, ["payg/+/balance"]) as conn:
        async for message in conn:
            ...            # make it durable
            message.ack()  # now the broker may forget it

Threads: each connection attempt gets a fresh paho `Client` whose network loop runs in paho's own
thread (`loop_start`). Blocking calls (TCP/TLS connect, joining that thread) run in a worker
thread, so the event loop never blocks. A `Client` is never reconnected (`reconnect_on_failure=
False`): the supervisor makes a new one with a new *epoch*. paho's `ack(mid)` is not bound to a
connection, and after a reconnect the broker may reuse a mid for another message; an ack that
carries an old epoch is therefore dropped (the broker redelivers that message on the new
connection) instead of acknowledging something we have not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.backoff import Backoff

__all__ = ["MqttConnection", "MqttMessage", "MqttSettings"]

log = logging.getLogger(__name__)

#: Put in the queue when the supervisor died of a bug, so the consumer raises instead of waiting forever.
_CRASHED: Any = object()

#: How often a paho thread waiting for a free in-flight slot checks whether its connection ended.
_SLOT_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """How to reach the broker and keep a persistent session there."""

    host: str = "127.0.0.1"
    port: int = 1883
    #: Fixed per gateway: the broker keeps the session (subscriptions, un-acked messages) under it.
    client_id: str = "meter-gateway"
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 30
    #: MQTT 5 Session Expiry Interval (s): how long the broker keeps the session while we are away.
    session_expiry: int = 86400
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Messages handed to the application and not yet acked, at most (also sent to an MQTT 5
    #: broker as Receive Maximum, so it stops sending before we have to push back).
    max_inflight_acks: int = 1000
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.client_id:
            problems.append("client_id must not be empty (a persistent session needs a fixed id)")
        if self.protocol not in ("5", "3.1.1"):
            problems.append(f"protocol must be '5' or '3.1.1', got {self.protocol!r}")
        if not 1 <= self.max_inflight_acks <= 65535:
            problems.append(f"max_inflight_acks must be 1..65535, got {self.max_inflight_acks}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            problems.append(f"need 0 < reconnect_min <= reconnect_max, got {self.reconnect_min}, {self.reconnect_max}")
        if self.session_expiry < 0 or self.keepalive < 0:
            problems.append("session_expiry and keepalive must be >= 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together")
        if problems:
            msg = f"MQTT settings for {self.host}:{self.port}: " + "; ".join(problems)
            raise ValueError(msg)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class _DropDisconnectedNoise(logging.Filter):
    """paho logs "Client is not connected" at ERROR after every clean disconnect() under
    loop_start (its loop runs once more without a socket); it is not an error for us."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger(f"{__name__}.paho")
_paho_log.addFilter(_DropDisconnectedNoise())


@dataclass(slots=True, eq=False)
class MqttMessage:
    """One received PUBLISH. Call `ack()` (in the event loop thread) once its data is durable."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    #: The connection it arrived on; an ack from an older epoch is dropped.
    epoch: int
    _conn: MqttConnection = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    def ack(self) -> None:
        """Send the PUBACK if this message's connection is still up; otherwise drop it (redelivery).

        Idempotent. Meant for the event loop thread; from another thread it is handed to the loop.
        """
        self._conn._ack(self)


class _Link:
    """One connection attempt: one paho Client, its thread, its epoch, and its state."""

    def __init__(self, epoch: int, client: mqtt.Client) -> None:
        self.epoch = epoch
        self.client = client
        self.connack = asyncio.Event()  # CONNACK accepted
        self.ready = asyncio.Event()  # SUBACK received: messages can flow
        self.ended = asyncio.Event()  # the connection is gone (or never came)
        self.end_reason = ""
        self.session_present = False
        # Set from the loop thread, read by the paho thread: a thread-safe flag, not an asyncio one.
        self.abort = threading.Event()


class MqttConnection:
    """A self-healing subscription: connects, subscribes with QoS 1, reconnects with backoff.

    Never raises for broker trouble (down at start, restarts, refused connects): it logs once per
    transition, counts, and keeps trying until the context exits. Messages are un-acked until
    `MqttMessage.ack()`; at most `max_inflight_acks` are outstanding, beyond that the paho thread
    waits, so a slow consumer pushes back to the broker instead of anything being dropped.
    """

    def __init__(self, settings: MqttSettings, subscriptions: Sequence[str]) -> None:
        if not subscriptions:
            msg = f"MQTT connection to {settings.where}: no subscriptions given"
            raise ValueError(msg)
        self.settings = settings
        self.subscriptions = tuple(subscriptions)
        self.messages = 0  #: received (including redeliveries)
        self.connects = 0  #: successful connections
        self.reconnects = 0  #: successful connections after the first
        self.connect_failures = 0  #: attempts that never got a CONNACK
        self.disconnects = 0  #: established connections that were lost
        self.acks_sent = 0
        self.acks_dropped = 0  #: acks for a connection that is gone: the broker redelivers
        self.last_error: str | None = None
        self._queue: asyncio.Queue[MqttMessage] = asyncio.Queue()
        # Counts messages handed over and not yet acked, across connections; acquired in the paho
        # thread, released in the loop thread, hence threading and not asyncio.
        self._slots = threading.Semaphore(settings.max_inflight_acks)
        self._epoch = 0
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        self._crash: BaseException | None = None

    # -- public surface ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and subscribed (SUBACK received) right now."""
        link = self._link
        return link is not None and link.ready.is_set() and not link.ended.is_set()

    @property
    def session_present(self) -> bool:
        link = self._link
        return link is not None and link.session_present

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def pending(self) -> int:
        """Messages received and waiting in the queue for the consumer."""
        return self._queue.qsize()

    async def __aenter__(self) -> MqttConnection:
        if self._supervisor is not None:
            msg = "MqttConnection is already running; it is not re-entrant"
            raise RuntimeError(msg)
        if self._closed:
            msg = "MqttConnection was closed; make a new one"
            raise RuntimeError(msg)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mqtt-{self.settings.client_id}@{self.settings.where}"
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Disconnect cleanly (the session and un-acked messages stay at the broker) and stop."""
        self._closed = True
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected and subscribed; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                link = self._link
                if link is not None and not link.ended.is_set():
                    ready = asyncio.ensure_future(link.ready.wait())
                    ended = asyncio.ensure_future(link.ended.wait())
                    try:
                        await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        ready.cancel()
                        ended.cancel()
                    if self.connected:
                        return
                await asyncio.sleep(0.02)

    async def get(self) -> MqttMessage:
        """The next message (waits). Raises what crashed the connection's supervisor, if anything."""
        item = await self._queue.get()
        if item is _CRASHED:
            self._queue.put_nowait(_CRASHED)  # every later get() raises too
            msg = f"MQTT connection to {self.settings.where} stopped: {self._crash!r}"
            raise RuntimeError(msg) from self._crash
        return item

    def __aiter__(self) -> AsyncIterator[MqttMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MqttMessage]:
        while True:
            yield await self.get()

    # -- acks (event loop thread) ---------------------------------------------------------------

    def _ack(self, message: MqttMessage) -> None:
        if self._loop_thread != threading.get_ident() and self._loop is not None:
            # Called from another thread (e.g. a spool writer): hop into the loop like paho does.
            self._post(self._ack, message)
            return
        if message._settled:
            return
        message._settled = True
        self._slots.release()
        if message.qos == 0:
            return
        link = self._link
        if link is None or link.epoch != message.epoch or link.ended.is_set():
            self.acks_dropped += 1
            log.debug("ack of mid %d (epoch %d) dropped: connection is gone", message.mid, message.epoch)
            return
        # Safe from this thread: paho queues the PUBACK and wakes its loop through its socketpair.
        link.client.ack(message.mid, message.qos)
        self.acks_sent += 1

    # -- supervisor (event loop) ----------------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            await self._reconnect_forever()
        except Exception as exc:
            # A bug, not broker trouble: hand it to the consumer so its task group sees it.
            log.exception("MQTT %s: connection supervisor crashed", self.settings.where)
            self._crash = exc
            self._queue.put_nowait(_CRASHED)
            raise

    async def _reconnect_forever(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        while True:
            worked = False
            try:
                worked = await self._connect_once()
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.connect_failures += 1
                self._note_failure(f"connect to {self.settings.where} failed: {exc}")
            if worked:
                backoff.reset()
            delay = backoff.next()
            log.debug("MQTT %s: next connect in %.2f s", self.settings.where, delay)
            await asyncio.sleep(delay)

    def _note_failure(self, text: str) -> None:
        self.last_error = text
        if not self._failing:  # log once per transition, count every time
            log.warning("MQTT %s; retrying with backoff", text)
            self._failing = True
        else:
            log.debug("MQTT %s", text)

    async def _connect_once(self) -> bool:
        """One connection's life. True if it got connected (then ended); raises if it never did."""
        self._epoch += 1
        link = _Link(self._epoch, self._make_client())
        link.client.user_data_set(link)
        self._link = link
        started = False
        try:
            await self._blocking(self._tcp_connect, link.client)
            link.client.loop_start()
            started = True
            await self._wait_connack(link)
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            if self._failing:
                log.info("MQTT %s: connected again (session present: %s)", self.settings.where, link.session_present)
            else:
                log.info("MQTT %s: connected (session present: %s)", self.settings.where, link.session_present)
            self._failing = False
            self.last_error = None
            await link.ended.wait()
            self.disconnects += 1
            self._note_failure(f"connection to {self.settings.where} lost: {link.end_reason}")
            return True
        finally:
            link.abort.set()  # a paho thread waiting for a slot gives up (no ack: redelivered)
            if started:
                if not link.ended.is_set():
                    link.client.disconnect()  # clean DISCONNECT: the session stays at the broker
                await self._blocking(link.client.loop_stop)
            link.ended.set()

    async def _wait_connack(self, link: _Link) -> None:
        connack = asyncio.ensure_future(link.connack.wait())
        ended = asyncio.ensure_future(link.ended.wait())
        try:
            done, _ = await asyncio.wait(
                {connack, ended}, timeout=self.settings.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connack.cancel()
            ended.cancel()
        if link.ended.is_set():
            msg = link.end_reason or "connection closed before CONNACK"
            raise ConnectionError(msg)
        if not done:
            msg = f"no CONNACK within {self.settings.connect_timeout} s"
            raise TimeoutError(msg)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking paho call in a worker thread; if cancelled, still let it finish.

        Finishing matters: a connect abandoned half-way would leave an open socket nobody closes.
        """
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            # MQTT 3.1.1 persistent session; MQTT 5 rejects clean_session (clean_start is per connect).
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        # An exception escaping a callback would end paho's thread without on_disconnect; ours catch
        # their own, and this keeps paho's thread alive if one slips through anyway.
        client.suppress_exceptions = True
        client.enable_logger(_paho_log)
        client.connect_timeout = s.connect_timeout
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca or s.tls_cert:
            client.tls_set(ca_certs=s.tls_ca, certfile=s.tls_cert, keyfile=s.tls_key)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _tcp_connect(self, client: mqtt.Client) -> None:
        s = self.settings
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry
            props.ReceiveMaximum = s.max_inflight_acks
            # clean_start=False on *every* connect: paho's default (FIRST_ONLY) wipes the session
            # on the first connect, losing what the broker queued while the gateway was down.
            client.connect(s.host, s.port, s.keepalive, clean_start=False, properties=props)
        else:
            client.connect(s.host, s.port, s.keepalive)

    # -- paho thread -> event loop --------------------------------------------------------------
    #
    # paho calls these on its network thread. asyncio objects are not thread-safe, so every hop
    # into the loop goes through loop.call_soon_threadsafe (which also wakes the loop up); nothing
    # here touches an asyncio object directly.

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, link: _Link, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._post(self._ended, link, f"broker refused the connection: {reason}")
            return
        # Subscribe on every connect, here in paho's thread before it reads any PUBLISH of this
        # connection: a broker may have lost the session even when session_present says otherwise.
        if self.settings.protocol == "5":
            topics: Any = [(t, SubscribeOptions(qos=1)) for t in self.subscriptions]
        else:
            topics = [(t, 1) for t in self.subscriptions]
        rc, _mid = client.subscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("MQTT %s: subscribe failed to send: %s", self.settings.where, mqtt.error_string(rc))
        self._post(self._connected, link, bool(flags.session_present))

    def _on_subscribe(self, client: mqtt.Client, link: _Link, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        failed = [(t, str(r)) for t, r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        self._post(self._subscribed, link, failed)

    def _on_disconnect(
        self, client: mqtt.Client, link: _Link, flags: mqtt.DisconnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            why = f"broker sent DISCONNECT ({reason})"
        elif reason.is_failure and str(reason) != "Unspecified error":
            why = str(reason)
        else:
            why = "network connection closed"
        self._post(self._ended, link, why)

    def _on_message(self, client: mqtt.Client, link: _Link, msg: mqtt.MQTTMessage) -> None:
        # Back-pressure: with max_inflight_acks messages un-acked, wait here in paho's thread. paho
        # then reads nothing more from the socket, TCP fills, and the broker keeps the rest queued
        # (un-acked, so nothing is lost). An MQTT 5 broker already stops at Receive Maximum, so this
        # wait is the fallback for 3.1.1. If the wait outlasts 1.5 x keepalive the broker drops the
        # connection; after the wait the loop notices, and everything un-acked is redelivered.
        while not self._slots.acquire(timeout=_SLOT_POLL_S):
            if link.abort.is_set():
                return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "(invalid UTF-8 topic)"
        message = MqttMessage(
            topic=topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            dup=bool(msg.dup),
            mid=msg.mid,
            epoch=link.epoch,
            _conn=self,
        )
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(self._deliver, message)
        except RuntimeError:
            self._slots.release()

    # -- event loop side of the hops -------------------------------------------------------------

    def _connected(self, link: _Link, session_present: bool) -> None:
        link.session_present = session_present
        link.connack.set()

    def _subscribed(self, link: _Link, failed: list[tuple[str, str]]) -> None:
        if failed:
            text = ", ".join(f"{t}: {r}" for t, r in failed)
            self.last_error = f"subscription refused by {self.settings.where}: {text}"
            log.error("MQTT %s", self.last_error)
        link.ready.set()

    def _ended(self, link: _Link, reason: str) -> None:
        if not link.ended.is_set():
            link.end_reason = reason
            link.ended.set()

    def _deliver(self, message: MqttMessage) -> None:
        self.messages += 1
        self._queue.put_nowait(message)
