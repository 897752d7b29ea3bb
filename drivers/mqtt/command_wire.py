"""The wire side of PAYG commands over MQTT: where commands go and replies come from, what a
command says, and how a meter's reply is read (the tracker, drivers.mqtt.commands, follows them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from drivers.mqtt.topics import TopicTemplate
from gateway.errors import PayloadError
from gateway.model import Command, CommandStatus
from gateway.model.text import storable, unstorable_at

#: Reply statuses meters send, as the tracker reads them (case-insensitive).
REPLY_STATUS: Mapping[str, CommandStatus] = {
    **dict.fromkeys(("acknowledged", "ack", "ok", "done", "success", "accepted", "executed"),
                    CommandStatus.ACKNOWLEDGED),
    **dict.fromkeys(("failed", "fail", "error", "rejected", "nack"), CommandStatus.FAILED),
}


class Publisher(Protocol):
    """What the tracker needs from a connection (MqttConnection implements it)."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, response_topic: str | None = None,
                      correlation_data: bytes | None = None, timeout: float | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Where commands go and replies come from, and how long a meter has to answer."""

    command_topic: str = "payg/{meter_id}/command"
    reply_topic: str = "payg/{meter_id}/command/reply"
    #: Seconds from publishing to TIMED_OUT without a reply.
    timeout: float = 60.0
    #: Seconds to wait for the broker's PUBACK of a command.
    publish_timeout: float = 10.0
    #: Settled commands kept in memory so that late or repeated replies find them.
    max_tracked: int = 10_000

    def __post_init__(self) -> None:
        problems = []
        for name in ("command_topic", "reply_topic"):
            try:
                template = TopicTemplate(getattr(self, name))
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if template.placeholders != ("meter_id",):
                problems.append(f"{name} {template.template!r} may hold only the {{meter_id}} placeholder")
        if self.command_topic == self.reply_topic:
            problems.append("command_topic and reply_topic must differ")
        if self.timeout <= 0 or self.publish_timeout <= 0 or self.max_tracked < 1:
            problems.append("timeout, publish_timeout and max_tracked must be positive")
        if problems:
            msg = "MQTT commands: " + "; ".join(problems)
            raise ValueError(msg)


def _reply_error(topic: str, reason: str, message: str) -> PayloadError:
    return PayloadError(topic, reason, f"command reply: {message}")


def parse_reply(topic: str, payload: bytes, correlation_data: bytes | None) -> tuple[str, CommandStatus, str | None]:
    """(correlation id, status, detail) of a meter's reply, or PayloadError(topic, reason, message)."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _reply_error(topic, "malformed_json", "payload is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _reply_error(topic, "not_an_object", "payload must be a JSON object")
    cid = doc.get("correlation_id")
    if cid is None and correlation_data:
        cid = correlation_data.decode("utf-8", errors="replace")
    if cid is None:
        raise _reply_error(topic, "missing_field", "field 'correlation_id' is missing (and no MQTT 5 correlation data)")
    if not isinstance(cid, str) or not cid:
        raise _reply_error(topic, "wrong_type", f"field 'correlation_id' must be a non-empty string, got {cid!r:.80}")
    if unstorable_at(cid) is not None:
        raise _reply_error(topic, "bad_text", f"correlation id {cid!r:.80} holds NUL or a lone surrogate")
    raw = doc.get("status")
    if raw is None:
        raise _reply_error(topic, "missing_field", "field 'status' is missing")
    status = REPLY_STATUS.get(raw.strip().lower()) if isinstance(raw, str) else None
    if status is None:
        known = ", ".join(sorted(REPLY_STATUS))
        raise _reply_error(topic, "wrong_type", f"field 'status' must be one of {known}; got {raw!r:.80}")
    detail = doc.get("detail")
    return cid, status, storable(detail) if isinstance(detail, str) and detail else None


def money(value: Decimal) -> str:
    """An amount as its digits, never through a float."""
    return format(value, "f")


def command_payload(currencies: Mapping[str, str], command: Command, reply_to: str) -> bytes:
    """The JSON a command is published as (see the tracker's module docstring)."""
    # Amounts go out as JSON numbers written digit for digit from the Decimal (no float).
    parts = [f'"correlation_id": {json.dumps(command.correlation_id)}',
             f'"command": {json.dumps(command.kind.value)}']
    if command.amount is not None:
        parts.append(f'"amount": {money(command.amount)}')
        parts.append(f'"currency": {json.dumps(currencies.get(command.meter_id, "XXX"))}')
    if command.reference is not None:
        parts.append(f'"reference": {json.dumps(command.reference)}')
    parts.append(f'"ts": {json.dumps(command.created_at.isoformat().replace("+00:00", "Z"))}')
    parts.append(f'"reply_to": {json.dumps(reply_to)}')
    return ("{" + ", ".join(parts) + "}").encode()


__all__ = ["REPLY_STATUS", "CommandSettings", "Publisher", "command_payload", "money", "parse_reply"]
