"""The MQTT driver: subscribe to PAYG topics and emit RawPayload, acked only once durable."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from drivers.base import DriverStatus, Observed
from drivers.mqtt.commands import CommandTracker
from drivers.mqtt.connection import MqttConnection, MqttSettings
from drivers.mqtt.topics import TopicTemplate
from gateway.errors import InvalidRequest
from gateway.model import Command, CommandKind
from gateway.model.samples import RawPayload

__all__ = ["MqttSubscriber", "TopicTemplate"]  # TopicTemplate re-exported for old imports

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MqttSubscriber:
    """Listens on the PAYG topics until cancelled and emits one RawPayload per message.

    `emit` is awaited, so a slow pipeline pushes back: messages stay un-acked at the broker.
    The RawPayload's `ack` sends the PUBACK; the pipeline calls it (in the event loop thread)
    once the data is durable. With `share_group`, gateways split the topics between them
    through an MQTT 5 shared subscription ($share/GROUP/...).
    """

    def __init__(
        self,
        settings: MqttSettings,
        templates: Sequence[str],
        emit: Callable[[RawPayload], Awaitable[None]],
        *,
        known_meters: set[str] | None = None,
        share_group: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
        recent_per_meter: int = 5,
        preview_bytes: int = 512,
        max_tracked_meters: int = 100_000,
        commands: CommandTracker | None = None,
    ) -> None:
        if not templates:
            msg = "MqttSubscriber needs at least one topic template"
            raise ValueError(msg)
        if share_group is not None:
            if settings.protocol != "5":
                msg = f"shared subscriptions ($share/{share_group}/...) need MQTT 5, settings say {settings.protocol}"
                raise ValueError(msg)
            if not share_group or any(c in share_group for c in "/+#"):
                msg = f"share group {share_group!r} must be non-empty without '/', '+' or '#'"
                raise ValueError(msg)
        self.settings = settings
        self.templates = tuple(TopicTemplate(t) for t in templates)
        self.emit = emit
        self.known_meters = known_meters
        self.share_group = share_group
        self.clock = clock
        self.preview_bytes = preview_bytes
        self.max_tracked_meters = max_tracked_meters
        self._recent_per_meter = recent_per_meter
        prefix = f"$share/{share_group}/" if share_group else ""
        subscriptions = [prefix + t.subscription for t in self.templates]
        #: Sends commands and follows the meters' replies; replies are never in the share group
        #: (see drivers.mqtt.commands).
        self.commands = commands
        if commands is not None:
            subscriptions.append(commands.reply_template.subscription)
        self.subscriptions = tuple(dict.fromkeys(subscriptions))
        self.unknown_messages = 0  #: messages whose topic named no known meter
        self.last_unknown_topic: str | None = None
        self._recent: dict[str, deque[tuple[str, bytes, int, datetime]]] = {}
        self._conn: MqttConnection | None = None
        self._started = asyncio.Event()

    def resolve(self, topic: str) -> str | None:
        """The meter id a topic belongs to, or None (no template fits, or not a known meter)."""
        return self._route(topic)[0]

    def _route(self, topic: str) -> tuple[str | None, str | None]:
        """(meter id or None, the template the topic fits or None): the first template that fits
        decides, and names the payload format the normaliser reads the message with."""
        for template in self.templates:
            meter_id = template.meter_id(topic)
            if meter_id is not None:
                if self.known_meters is not None and meter_id not in self.known_meters:
                    return None, template.template
                return meter_id, template.template
        return None, None

    async def run(self) -> None:
        """Receive and emit until cancelled; then disconnect cleanly (the session stays)."""
        # Kept after run() ends, so health() still shows the last connection's counters.
        self._conn = conn = MqttConnection(self.settings, self.subscriptions)
        self._started.set()
        async with conn:
            if self.commands is None:
                await self._receive(conn)
                return
            self.commands.attach(conn)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.commands.run(), name="mqtt-commands")
                    tg.create_task(self._receive(conn), name="mqtt-receive")
            finally:
                self.commands.attach(None)

    async def send_command(self, meter_id: str, kind: CommandKind | str, *, amount: Decimal | None = None,
                           reference: str | None = None) -> Command:
        """Send a top-up, disconnect or reconnect to a PAYG meter (see CommandTracker.send)."""
        if self.commands is None:
            msg = f"meter {meter_id}: commands are not enabled for the MQTT subscriber on {self.settings.where}"
            raise InvalidRequest(msg)
        return await self.commands.send(meter_id, kind, amount=amount, reference=reference)

    async def _receive(self, conn: MqttConnection) -> None:
        commands = self.commands
        async for message in conn:
            received_at = self.clock()
            try:
                if commands is not None:
                    reply_from = commands.reply_template.meter_id(message.topic)
                    if reply_from is not None:
                        known = self.known_meters is None or reply_from in self.known_meters
                        commands.handle_reply(reply_from if known else None, message.topic, message.payload,
                                              message.correlation_data, message.ack)
                        continue
                meter_id, template = self._route(message.topic)
                self._remember(meter_id, message.topic, message.payload, received_at)
            except Exception:
                # Nothing a message carries may end the receive loop (it would come back after
                # the restart, unacknowledged, and end it again): handed on as a message of no
                # known meter, it becomes a dead letter and is acknowledged.
                log.exception("message on %r could not be routed; passed on as of no known meter", message.topic)
                meter_id = template = None
            await self.emit(
                RawPayload(
                    topic=message.topic,
                    payload=message.payload,
                    received_at=received_at,
                    meter_id=meter_id,
                    ack=message.ack,
                    template=template,
                )
            )

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once `run()` is connected and subscribed (for tests and start-up ordering)."""
        async with asyncio.timeout(timeout):
            await self._started.wait()
            assert self._conn is not None
            await self._conn.wait_connected()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    # -- the driver contract (drivers.base.Driver) ------------------------------------------------
    @property
    def name(self) -> str:
        return "mqtt"

    @property
    def target(self) -> str:
        return ""  # the protocol's only link

    def meter_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.known_meters or ()))

    def meter_health(self, meter_id: str) -> None:
        return None  # its meters push: no polls to keep health of

    def status(self, observed: Observed) -> DriverStatus:
        """The broker link for diagnostics (and /readyz's "broker" check): the connection's counters,
        and the messages the pipeline saw (rate, and dead letters by reason)."""
        h = self.health()
        errors = dict(observed.message_failures())
        for counter in ("connect_failures", "acks_dropped"):
            if h.get(counter):
                errors[counter] = h[counter]
        rate = round(observed.messages_per_second(), 3)
        return DriverStatus(
            label="mqtt", where=h["broker"], connected=h["connected"], rate=rate, rate_unit="msg/s",
            errors_by_kind=errors, meters=len(self.known_meters) if self.known_meters is not None else None,
            check="broker",
            detail={"broker": h["broker"], "client_id": h["client_id"], "subscriptions": h["subscriptions"],
                    "messages": h["messages"], "messages_per_s": rate, "connects": h["connects"],
                    "reconnects": h["reconnects"], "pending_acks": h["pending"], "last_error": h["last_error"],
                    "unknown_meter_messages": h["unknown_meter_messages"]})

    def _remember(self, meter_id: str | None, topic: str, payload: bytes, received_at: datetime) -> None:
        if meter_id is None:
            self.unknown_messages += 1
            self.last_unknown_topic = topic
            return
        recent = self._recent.get(meter_id)
        if recent is None:
            if len(self._recent) >= self.max_tracked_meters:
                return  # bounded memory even if a publisher invents meter ids
            recent = self._recent[meter_id] = deque(maxlen=self._recent_per_meter)
        # Kept raw and rendered only when asked for: this runs for every message.
        recent.append((topic, payload[: self.preview_bytes], len(payload), received_at))

    def _render(self, entry: tuple[str, bytes, int, datetime]) -> dict[str, Any]:
        topic, preview, size, received_at = entry
        text = preview.decode("utf-8", errors="replace")
        if size > len(preview):
            text += f"... ({size} bytes)"
        return {"topic": topic, "payload": text, "received_at": received_at.isoformat()}

    def recent(self, meter_id: str) -> list[dict[str, Any]]:
        """The last few payloads of a meter, newest last (technicians' diagnostics)."""
        return [self._render(e) for e in self._recent.get(meter_id, ())]

    @staticmethod
    def _counters(conn: MqttConnection | None) -> dict[str, Any]:
        def get(name: str, default: Any = 0) -> Any:
            return getattr(conn, name) if conn is not None else default

        return {
            "messages": get("messages"),
            "connects": get("connects"),
            "reconnects": get("reconnects"),
            "connect_failures": get("connect_failures"),
            "disconnects": get("disconnects"),
            "acks_sent": get("acks_sent"),
            "acks_dropped": get("acks_dropped"),
            "pending": get("pending"),
            "last_error": get("last_error", None),
        }

    def health(self) -> dict[str, Any]:
        """A snapshot for diagnostics: connection state, counters, last payload per meter."""
        conn = self._conn
        return {
            "broker": self.settings.where,
            "client_id": self.settings.client_id,
            "protocol": self.settings.protocol,
            "subscriptions": list(self.subscriptions),
            "connected": self.connected,
            "session_present": conn.session_present if conn is not None else False,
            **self._counters(conn),
            "unknown_meter_messages": self.unknown_messages,
            "last_unknown_topic": self.last_unknown_topic,
            "meters": {m: self._render(r[-1]) for m, r in self._recent.items() if r},
            "commands": self.commands.health() if self.commands is not None else None,
        }
