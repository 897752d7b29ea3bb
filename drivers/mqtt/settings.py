"""The `[mqtt]` section and a PAYG meter's keys: broker, session, balance topics and their payload
formats, PAYG commands.

Example::

    [mqtt]
    enabled = true
    host = "broker.example"
    port = 8883
    tls_ca = "/etc/meter-gateway/ca.pem"          # TLS on; tls_cert + tls_key for a client certificate
    username = "gateway-7"                          # password: env METER_GATEWAY_MQTT_PASSWORD
    share_group = "payg"                            # MQTT 5: gateways split the meters between them
    topics = ["payg/{meter_id}/balance"]
    field_mapping = { balance = "/data/credit", ts = "/data/time" }
    value_maps = { relay = { closed = "connected", open = "disconnected" } }   # the vendor's words
    scales = { balance = 0.01, debt = 0.01 }        # money sent in minor units (cents)
    timestamp = "epoch_ms"
    low_credit_threshold = 50                       # per meter: meters[].low_credit_threshold
    currency_decimals = { KES = 3 }                 # the vendor's meters take top-ups in tenths of a cent

    [[mqtt.sources]]                                # another topic, written differently
    topic = "legacy/{meter_id}/credit"
    payload_format = "number"

    [[mqtt.sources]]                                # wireless M-Bus meters, decoded by wmbusmeters
    topic = "wmbusmeters/{meter_id}"                # {meter_id}: the meter's name in wmbusmeters
    payload_format = "wmbusmeters"                  # with meters[].wmbus_map = "wmbusmeters"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Gt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.model.payloads import check_scales, resolve_mapping, resolve_value_maps

PayloadFormatName = Literal["json", "number", "wmbusmeters"]
#: The most decimals a command amount may carry anywhere (the API's limit too).
MAX_AMOUNT_DECIMALS = 6
TimestampMode = Literal["auto", "iso8601", "epoch_s", "epoch_ms", "received"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(template: str) -> str:
    """A topic template names the meter exactly once and has no MQTT wildcards (they come from it)."""
    if template.count("{meter_id}") != 1:
        msg = f"topic template {template!r} must contain the {{meter_id}} placeholder exactly once"
        raise ValueError(msg)
    if any(c in template for c in "+#") or template.startswith("$") or "//" in template:
        msg = f"topic template {template!r} must not contain '+', '#', '//' or start with '$'"
        raise ValueError(msg)
    return template


def _check_templates(templates: list[str]) -> list[str]:
    return [_check_template(t) for t in templates]


def _check_mapping(mapping: dict[str, str] | None) -> dict[str, str] | None:
    resolve_mapping(mapping)  # ValueError names the unknown field or the bad pointer
    return mapping


#: A value map's targets: canonical words, or TOML booleans for the boolean fields.
ValueMaps = dict[str, dict[str, str | bool]]


def _check_value_maps(maps: ValueMaps | None) -> ValueMaps | None:
    resolve_value_maps(maps)  # ValueError names the field, the word and what it may map to
    return maps


def _check_scales(scales: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
    check_scales(scales)
    return scales


class TopicSource(_Section):
    """One more topic template whose payloads are written differently from [mqtt]'s defaults."""

    topic: str = Field(description="Template with {meter_id}, e.g. 'legacy/{meter_id}/credit'")
    payload_format: PayloadFormatName | None = Field(default=None, description="Default mqtt.payload_format")
    field_mapping: dict[str, str] | None = Field(default=None, description="Default mqtt.field_mapping")
    timestamp: TimestampMode | None = Field(default=None, description="Default mqtt.timestamp")
    value_maps: ValueMaps | None = Field(default=None, description="Default mqtt.value_maps")
    scales: dict[str, Decimal] | None = Field(default=None, description="Default mqtt.scales")

    _topic = field_validator("topic")(_check_template)
    _mapping = field_validator("field_mapping")(_check_mapping)
    _value_maps = field_validator("value_maps")(_check_value_maps)
    _scales = field_validator("scales")(_check_scales)


class MqttSection(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, description="Fixed id for the persistent session; default meter-gateway-<gateway.id>")
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = Field(default=None, description="env METER_GATEWAY_MQTT_PASSWORD overrides")
    tls_ca: Path | None = Field(default=None, description="CA file to verify the broker (turns TLS on)")
    tls_cert: Path | None = Field(default=None, description="Client certificate (with tls_key)")
    tls_key: Path | None = None
    keepalive: int = Field(default=30, ge=5, le=3600, description="Seconds")
    session_expiry: int = Field(default=86400, ge=0, description="MQTT 5: seconds the broker keeps the session while we are away")
    max_inflight: int = Field(default=1000, ge=1, le=65535, description="Messages received and not yet acked, at most")
    reconnect_min_delay: float = Field(default=0.5, gt=0, le=60, description=(
        "Seconds before the first attempt to connect again after losing the broker; doubles after each failed "
        "attempt, up to reconnect_max_delay"))
    reconnect_max_delay: float = Field(default=5.0, gt=0, le=600, description=(
        "Longest wait in seconds between attempts (each delay jittered by ±10 %, never above this): a broker that "
        "comes back is connected to again within this"))
    topics: list[str] = Field(default_factory=lambda: ["payg/{meter_id}/balance"],
                              description="Balance topic templates written in the default payload format")
    sources: list[TopicSource] = Field(default_factory=list,
                                       description="More balance topic templates, each with its own format")
    share_group: str | None = Field(default=None, description="MQTT 5 shared subscription group ($share/GROUP/...)")
    payload_format: PayloadFormatName = Field(default="json", description="'json' (an object, see field_mapping) or 'number' (a bare balance)")
    field_mapping: dict[str, str] = Field(default_factory=dict,
                                          description="Canonical field -> JSON pointer, e.g. balance = '/data/credit'")
    timestamp: TimestampMode = Field(default="auto", description="How 'ts' is written; 'received' uses the time of receipt")
    value_maps: ValueMaps = Field(default_factory=dict, description=(
        "The vendor's words for relay and emergency_credit_in_use, matched case-insensitively, e.g. relay = "
        "{closed = 'connected', open = 'disconnected'}; booleans and numbers as keys too ({'true' = 'connected', "
        "'0' = 'disconnected'}). A value the map lacks is a dead letter"))
    scales: dict[str, Decimal] = Field(default_factory=dict, description=(
        "Factors for money sent in minor units, applied exactly: balance, debt, emergency_credit, "
        "last_topup_amount, e.g. {balance = 0.01}"))
    max_payload_bytes: int = Field(default=16384, ge=64, le=1_048_576, description="Larger payloads are dead letters")
    max_future: float = Field(default=300.0, ge=0, description="Seconds a ts may lie ahead of receipt")
    currency: str = "XXX"
    currency_decimals: dict[str, int] = Field(default_factory=dict, description=(
        "Decimals a top-up amount may carry, per currency, where the meters' vendor counts otherwise than "
        "ISO 4217's minor unit (e.g. {KES = 3}); amounts with more are refused (422). At most 6"))
    low_credit_threshold: Decimal = Field(default=Decimal("5"), description="Default; meters[].low_credit_threshold overrides")
    max_drain_per_hour: Decimal | None = Field(default=None, gt=0, description=(
        "Credit falling faster than this per hour is suspicious; unset = learned from each meter"))
    commands: bool = Field(default=True, description="Send top-up / disconnect / reconnect commands")
    command_topic: str = "payg/{meter_id}/command"
    reply_topic: str = "payg/{meter_id}/command/reply"
    command_timeout: float = Field(default=60.0, gt=0, le=86400, description="Seconds for a meter to reply")

    _topics = field_validator("topics")(_check_templates)
    _command_topics = field_validator("command_topic", "reply_topic")(_check_template)
    _mapping = field_validator("field_mapping")(_check_mapping)
    _value_maps = field_validator("value_maps")(_check_value_maps)
    _scales = field_validator("scales")(_check_scales)

    @field_validator("currency_decimals")
    @classmethod
    def _currency_decimals(cls, decimals: dict[str, int]) -> dict[str, int]:
        problems = []
        for code, places in decimals.items():
            if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
                problems.append(f"currency {code!r} must be a three-letter code in capitals, as ISO 4217 writes "
                                "them (e.g. KES)")
            if not 0 <= places <= MAX_AMOUNT_DECIMALS:
                problems.append(f"{code} = {places}: decimals must be 0 to {MAX_AMOUNT_DECIMALS}")
        if problems:
            raise ValueError("; ".join(problems))
        return decimals

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, group: str | None) -> str | None:
        if group is not None and (not group or any(c in group for c in "/+#")):
            msg = f"share group {group!r} must be non-empty without '/', '+' or '#'"
            raise ValueError(msg)
        return group

    def all_topics(self) -> list[str]:
        """Every balance topic template: `topics`, then those of `sources`."""
        return [*self.topics, *(s.topic for s in self.sources)]


@dataclass(frozen=True, slots=True)
class MqttMeter:
    """A PAYG (MQTT) meter's own keys in [[meters]]."""

    low_credit_threshold: Decimal | None = field(
        default=None, metadata={"description": "PAYG meters; default mqtt.low_credit_threshold"})
    max_drain_per_hour: Annotated[Decimal, Gt(0)] | None = field(
        default=None, metadata={"description": "PAYG meters; default mqtt.max_drain_per_hour"})
    wmbus_map: str | None = field(default=None, metadata={
        "description": "A wireless M-Bus meter read by wmbusmeters (its JSON on a topic of payload_format "
        "'wmbusmeters'): the object map of its fields, e.g. 'wmbusmeters'. Unset: a PAYG meter"})


__all__ = ["MAX_AMOUNT_DECIMALS", "MqttMeter", "MqttSection", "TopicSource"]
