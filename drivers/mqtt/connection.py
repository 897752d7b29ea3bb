"""An asyncio adapter over paho-mqtt 2.x with a persistent session and application-controlled acks.

Shaped like aiomqtt (an async context manager, messages as an async iterator) but it owns its
reconnection, because aiomqtt has no manual ack (empicano/aiomqtt#345) and SPEC §2 acks a message
only once its data is durable::

    async with MqttConnection(settings, ["payg/+/balance"]) as conn:
        async for message in conn:
            ...            # make it durable
            message.ack()  # now the broker may forget it

I/O: paho's network loop is driven by this event loop, not by a paho thread: the socket is
registered with `add_reader` / `add_writer` (paho's on_socket_* callbacks, as in paho's
examples/loop_asyncio.py) and `loop_misc` runs every second for keepalive. So paho's callbacks
run in the loop thread: a message goes straight into the queue, an ack is queued and written on
the next writable event, and no thread competes with the pipeline for the GIL. Reads are
buffered (see _Client). Only the blocking TCP/TLS connect runs in a worker thread; the socket
callbacks it triggers are handed to the loop.

Each connection attempt gets a fresh paho `Client` (`reconnect_on_failure=False`): the supervisor
makes a new one with a new *epoch*. paho's `ack(mid)` is not bound to a connection, and after a
reconnect the broker may reuse a mid for another message; an ack that carries an old epoch is
therefore dropped (the broker redelivers that message on the new connection) instead of
acknowledging something we have not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
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
from gateway.errors import ConnectionFailed, NotSent

__all__ = ["RECONNECT_JITTER", "MqttConnection", "MqttMessage", "MqttSettings"]

log = logging.getLogger(__name__)

#: Put in the queue when the supervisor died of a bug, so the consumer raises instead of waiting forever.
_CRASHED: Any = object()

#: Seconds between paho's housekeeping calls (keepalive PINGREQ, PINGRESP timeout).
_MISC_EVERY_S = 1.0

#: Spread of each reconnect delay, as a fraction (±10 %, never above `reconnect_max`), so that
#: gateways that lost the same broker do not all knock again in the same instant.
RECONNECT_JITTER = 0.1


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
    #: First wait (s) before connecting again after a lost connection or a failed attempt;
    #: doubles after each failed attempt up to `reconnect_max`.
    reconnect_min: float = 0.5
    #: Longest wait (s) between attempts: a broker that comes back is connected to again within
    #: this (plus the connect itself). 5 s, not 30: a 45 s outage cost up to 30 s more (issue 22).
    reconnect_max: float = 5.0
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

    def reconnect_backoff(self, rng: random.Random | None = None) -> Backoff:
        """The reconnect schedule: reconnect_min, doubling, capped at reconnect_max, each delay
        jittered by ±RECONNECT_JITTER and never above reconnect_max."""
        return Backoff(self.reconnect_min, self.reconnect_max, jitter=RECONNECT_JITTER, rng=rng)


_paho_log = logging.getLogger(f"{__name__}.paho")


#: Bytes read from the socket at once (paho asks for a packet's header one byte at a time).
_READ_CHUNK = 65536


class _Client(mqtt.Client):
    """paho's Client with buffered socket reads.

    paho reads each packet's fixed header one byte per recv() (three or four system calls per
    PUBLISH); this reads up to 64 KiB at once and serves paho's small reads from the buffer.
    `buffered()` tells the event loop that packets are waiting that epoll will not announce.
    Overrides paho's private `_sock_recv`, hence the pin paho-mqtt<3 and the driver tests.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            # Raises BlockingIOError when nothing is there, returns b"" at EOF: as paho expects.
            self._rbuf = super()._sock_recv(_READ_CHUNK)
            self._rpos = 0
            if not self._rbuf:
                return b""
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def buffered(self) -> int:
        return len(self._rbuf) - self._rpos


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
    #: MQTT 5 Correlation Data of the PUBLISH (a command reply may carry its correlation id here).
    correlation_data: bytes | None = None
    _settled: bool = field(default=False, repr=False)

    def ack(self) -> None:
        """Send the PUBACK if this message's connection is still up; otherwise drop it (redelivery).

        Idempotent. Meant for the event loop thread; from another thread it is handed to the loop.
        """
        self._conn._ack(self)


class _Link:
    """One connection attempt: one paho Client, its socket registration, its epoch, its state."""

    def __init__(self, epoch: int, client: _Client) -> None:
        self.epoch = epoch
        self.client = client
        self.connack = asyncio.Event()  # CONNACK accepted
        self.ready = asyncio.Event()  # SUBACK received: messages can flow
        self.ended = asyncio.Event()  # the connection is gone (or never came)
        self.end_reason = ""
        self.session_present = False
        #: The socket's descriptor while it is registered with the loop (-1: not registered).
        self.fd = -1
        self.sock: Any = None
        self.reading = False
        self.writing = False
        self.closed = False  # paho closed the socket; a late "socket opened" must not register it
        self.misc: asyncio.Task[None] | None = None
        #: Our own publishes waiting for the broker's PUBACK, by mid.
        self.publishes: dict[int, asyncio.Future[None]] = {}


class MqttConnection:
    """A self-healing subscription: connects, subscribes with QoS 1, reconnects with backoff.

    Never raises for broker trouble (down at start, restarts, refused connects): it logs once per
    transition, counts, and keeps trying until the context exits. Messages are un-acked until
    `MqttMessage.ack()`; at most `max_inflight_acks` are outstanding, beyond that the socket is not
    read, so a slow consumer pushes back to the broker instead of anything being dropped.
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
        #: Messages handed to the consumer and not yet acked or dropped, across connections.
        self._unacked = 0
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

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish on the current connection; return once the broker acknowledged it (QoS 1).

        Raises NotSent when not connected or refused before it was written (nothing was sent),
        ConnectionFailed when the connection ends
        (or the broker refuses) before the acknowledgement: then the message may or may not have
        reached the broker. TimeoutError after `timeout` seconds without an acknowledgement.
        """
        link = self._link
        if link is None or not link.connack.is_set() or link.ended.is_set():
            raise NotSent(None, self.settings.where, f"cannot publish to {topic}: not connected to the broker")
        props = None
        if self.settings.protocol == "5" and (response_topic or correlation_data):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
        info = link.client.publish(topic, payload, qos=qos, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            msg = f"publish to {topic} refused by paho: {mqtt.error_string(info.rc)}"
            raise NotSent(None, self.settings.where, msg)
        # paho reports the PUBACK through a callback posted to this loop, so it cannot run before
        # this line registers the future (same thread, no await in between).
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.publishes[info.mid] = future
        ended = asyncio.ensure_future(link.ended.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {future, ended}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            link.publishes.pop(info.mid, None)
        if future.done():
            future.result()  # raises ConnectionFailed if the broker refused it
            return
        future.cancel()
        if link.ended.is_set():
            msg = f"connection lost before the broker acknowledged the publish to {topic} ({link.end_reason})"
            raise ConnectionFailed(None, self.settings.where, msg)
        msg = f"no acknowledgement for the publish to {topic} within {timeout} s"
        raise TimeoutError(msg)

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
        self._unacked -= 1
        link = self._link
        if message.qos != 0:
            if link is None or link.epoch != message.epoch or link.ended.is_set():
                self.acks_dropped += 1
                log.debug("ack of mid %d (epoch %d) dropped: connection is gone", message.mid, message.epoch)
            else:
                # paho queues the PUBACK and asks (on_socket_register_write) for the next writable event.
                link.client.ack(message.mid, message.qos)
                self.acks_sent += 1
        if link is not None and not link.reading and self._unacked < self.settings.max_inflight_acks:
            self._resume(link)

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
        backoff = self.settings.reconnect_backoff()
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
        try:
            await self._blocking(self._tcp_connect, link.client)
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
            self._hang_up(link)
            link.ended.set()

    def _hang_up(self, link: _Link) -> None:
        """Close the link's socket (cleanly if it is still up) and forget its loop registrations."""
        if link.fd >= 0 and not link.closed and not link.ended.is_set():
            # A clean DISCONNECT keeps the session (and un-acked messages) at the broker; paho
            # closes the socket once it is written, which calls _socket_closed.
            link.client.disconnect()
            with contextlib.suppress(OSError):
                link.client.loop_write()
        if not link.closed and link.sock is not None:
            # Still open (the DISCONNECT could not be written): close it ourselves.
            self._socket_closed(link, link.sock)
            with contextlib.suppress(OSError):
                link.sock.close()
        if link.misc is not None:
            link.misc.cancel()

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

    def _make_client(self) -> _Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = _Client(
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
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
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

    # -- paho callbacks -----------------------------------------------------------------------------
    #
    # paho calls these inside loop_read / loop_write, so in the loop thread, except the few it
    # makes while connect() runs in a worker thread. asyncio objects are not thread-safe: _in_loop
    # runs a step at once in the loop thread and hands it over (call_soon_threadsafe, in order)
    # from any other.

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
            self._in_loop(self._ended, link, f"broker refused the connection: {reason}")
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
        self._in_loop(self._connected, link, bool(flags.session_present))

    def _on_subscribe(self, client: mqtt.Client, link: _Link, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        failed = [(t, str(r)) for t, r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        self._in_loop(self._subscribed, link, failed)

    def _on_disconnect(
        self, client: mqtt.Client, link: _Link, flags: mqtt.DisconnectFlags, reason: ReasonCode, props: Any
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            why = f"broker sent DISCONNECT ({reason})"
        elif reason.is_failure and str(reason) != "Unspecified error":
            why = str(reason)
        else:
            why = "network connection closed"
        self._in_loop(self._ended, link, why)

    def _on_publish(self, client: mqtt.Client, link: _Link, mid: int, reason: ReasonCode, props: Any) -> None:
        self._in_loop(self._published, link, mid, None if not reason.is_failure else str(reason))

    def _on_message(self, client: mqtt.Client, link: _Link, msg: mqtt.MQTTMessage) -> None:
        # Runs in the loop thread, inside loop_read (the hot path: one call per message).
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "(invalid UTF-8 topic)"
        props = msg.properties
        self._queue.put_nowait(MqttMessage(
            topic=topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            dup=bool(msg.dup),
            mid=msg.mid,
            epoch=link.epoch,
            _conn=self,
            correlation_data=getattr(props, "CorrelationData", None) if props is not None else None,
        ))
        self.messages += 1
        self._unacked += 1

    # -- the socket in the event loop --------------------------------------------------------------
    #
    # paho asks for these while connect() runs in a worker thread (socket opened, CONNECT to write)
    # and later from the loop thread (inside loop_read/loop_write). Loop registrations must be
    # made in the loop thread, so calls from elsewhere are handed over with call_soon_threadsafe,
    # which keeps their order.

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._post(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._in_loop(self._socket_opened, link, sock)

    def _on_socket_close(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._in_loop(self._socket_closed, link, sock)

    def _on_socket_register_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._in_loop(self._want_write, link, True)

    def _on_socket_unregister_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._in_loop(self._want_write, link, False)

    def _socket_opened(self, link: _Link, sock: Any) -> None:
        if link.closed or link.fd >= 0:
            return
        loop = self._loop
        assert loop is not None
        link.sock, link.fd = sock, sock.fileno()
        link.misc = loop.create_task(self._housekeeping(link), name=f"mqtt-misc-{link.epoch}")
        self._resume(link)
        if link.client.want_write():
            self._want_write(link, True)

    def _socket_closed(self, link: _Link, sock: Any) -> None:
        if link.closed:
            return
        link.closed = True
        loop = self._loop
        if link.fd >= 0 and loop is not None:
            if link.reading:
                loop.remove_reader(link.fd)
            if link.writing:
                loop.remove_writer(link.fd)
        link.reading = link.writing = False
        link.fd = -1
        if link.misc is not None:
            link.misc.cancel()
        self._ended(link, link.end_reason or "network connection closed")

    def _want_write(self, link: _Link, on: bool) -> None:
        loop = self._loop
        if link.fd < 0 or link.closed or loop is None or link.writing == on:
            return
        link.writing = on
        if on:
            loop.add_writer(link.fd, self._writable, link)
        else:
            loop.remove_writer(link.fd)

    def _resume(self, link: _Link) -> None:
        loop = self._loop
        if link.fd >= 0 and not link.closed and not link.reading and loop is not None:
            link.reading = True
            loop.add_reader(link.fd, self._readable, link)
            if link.client.buffered():
                loop.call_soon(self._readable, link)  # read before the pause: epoll will not say

    def _readable(self, link: _Link) -> None:
        client = link.client
        max_unacked = self.settings.max_inflight_acks
        # TLS: decrypted bytes may also wait in the SSL object, with nothing left on the socket.
        pending = getattr(link.sock, "pending", None)
        while link.reading and not link.closed:
            # Back-pressure: with max_inflight_acks messages un-acked, stop reading. TCP fills and
            # the broker keeps the rest queued (un-acked, nothing lost). An MQTT 5 broker already
            # stops at Receive Maximum; this is the fallback for 3.1.1. _ack resumes reading.
            if self._unacked >= max_unacked:
                link.reading = False
                assert self._loop is not None
                self._loop.remove_reader(link.fd)
                return
            client.loop_read()
            if not client.buffered() and not (pending is not None and not link.closed and pending() > 0):
                return

    def _writable(self, link: _Link) -> None:
        link.client.loop_write()

    async def _housekeeping(self, link: _Link) -> None:
        """paho's loop_misc: sends PINGREQ when due, drops a connection whose PINGRESP is late."""
        while not link.closed:
            await asyncio.sleep(_MISC_EVERY_S)
            if link.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                return

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

    def _published(self, link: _Link, mid: int, refused: str | None) -> None:
        future = link.publishes.get(mid)
        if future is None or future.done():
            return
        if refused is None:
            future.set_result(None)
        else:
            msg = f"the broker refused a publish: {refused}"
            future.set_exception(ConnectionFailed(None, self.settings.where, msg))
