"""The MQTT driver: subscribe to PAYG topics and emit RawPayload, acked only once durable."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from drivers.mqtt.connection import MqttConnection, MqttSettings
from drivers.samples import RawPayload

__all__ = ["MqttSubscriber", "TopicTemplate"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TopicTemplate:
    """A topic with placeholders, e.g. "payg/{meter_id}/balance".

    Each level that holds a placeholder becomes "+" in the subscription ("payg/+/balance");
    `match()` reads the placeholders back out of a received topic. A level may mix text and a
    placeholder ("site/meter-{meter_id}"); "{meter_id}" must appear exactly once.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        levels = template.split("/")
        names = _PLACEHOLDER.findall(template)
        problems = []
        if names.count("meter_id") != 1:
            problems.append("must contain {meter_id} exactly once")
        if len(set(names)) != len(names):
            problems.append("repeats a placeholder")
        if any(c in template for c in "+#") or template.startswith("$"):
            problems.append("must not contain MQTT wildcards (+, #) or start with $")
        if any(not level for level in levels):
            problems.append("has an empty level")
        if problems:
            msg = f"topic template {template!r}: " + "; ".join(problems)
            raise ValueError(msg)
        self.subscription = "/".join("+" if _PLACEHOLDER.search(level) else level for level in levels)
        parts = []
        for level in levels:
            pos, pattern = 0, ""
            for m in _PLACEHOLDER.finditer(level):
                pattern += re.escape(level[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
                pos = m.end()
            parts.append(pattern + re.escape(level[pos:]))
        self._regex = re.compile("/".join(parts))

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholder values in `topic`, or None if it does not fit the template."""
        m = self._regex.fullmatch(topic)
        return m.groupdict() if m else None

    def meter_id(self, topic: str) -> str | None:
        fields = self.match(topic)
        return fields["meter_id"] if fields else None

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"


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
        self.subscriptions = tuple(dict.fromkeys(prefix + t.subscription for t in self.templates))
        self.unknown_messages = 0  #: messages whose topic named no known meter
        self.last_unknown_topic: str | None = None
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._conn: MqttConnection | None = None
        self._started = asyncio.Event()

    def resolve(self, topic: str) -> str | None:
        """The meter id a topic belongs to, or None (no template fits, or not a known meter)."""
        for template in self.templates:
            meter_id = template.meter_id(topic)
            if meter_id is not None:
                if self.known_meters is not None and meter_id not in self.known_meters:
                    return None
                return meter_id
        return None

    async def run(self) -> None:
        """Receive and emit until cancelled; then disconnect cleanly (the session stays)."""
        # Kept after run() ends, so health() still shows the last connection's counters.
        self._conn = conn = MqttConnection(self.settings, self.subscriptions)
        self._started.set()
        async with conn:
            async for message in conn:
                received_at = self.clock()
                meter_id = self.resolve(message.topic)
                self._remember(meter_id, message.topic, message.payload, received_at)
                await self.emit(
                    RawPayload(
                        topic=message.topic,
                        payload=message.payload,
                        received_at=received_at,
                        meter_id=meter_id,
                        ack=message.ack,
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
        text = payload[: self.preview_bytes].decode("utf-8", errors="replace")
        if len(payload) > self.preview_bytes:
            text += f"... ({len(payload)} bytes)"
        recent.append({"topic": topic, "payload": text, "received_at": received_at.isoformat()})

    def recent(self, meter_id: str) -> list[dict[str, Any]]:
        """The last few payloads of a meter, newest last (technicians' diagnostics)."""
        return list(self._recent.get(meter_id, ()))

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
            "meters": {m: dict(r[-1]) for m, r in self._recent.items() if r},
        }
