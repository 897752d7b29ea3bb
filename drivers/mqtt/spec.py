"""The MQTT driver's spec: the [mqtt] section, a PAYG meter's keys, the checks across them, what a
PAYG meter means to the stages (its balance terms, the payload formats of its topics), and the
subscriber (with its command tracker) when MQTT is on and PAYG meters are configured."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from drivers.base import BuildContext, Driver, DriverSpec, LinkMetric, MeterFacts, Problem, Subscriber
from drivers.mqtt.commands import CommandSettings, CommandTracker
from drivers.mqtt.connection import MqttSettings
from drivers.mqtt.settings import MqttMeter, MqttSection
from drivers.mqtt.subscriber import MqttSubscriber
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.objectmaps import object_maps
from gateway.model.payg import BalanceTerms
from gateway.model.payloads import PayloadLayout, check_scales, resolve_value_maps
from gateway.model.profiles import DeviceProfile

#: The keys only a PAYG (MQTT) meter has: another protocol's meter that sets one is a mistake.
_PAYG_KEYS = ("low_credit_threshold", "max_drain_per_hour")


def check(settings: MqttSection, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
          ) -> Iterator[Problem]:
    """PAYG meters need [mqtt] on; PAYG keys belong to PAYG meters; [mqtt]'s keys agree."""
    for b in meters:
        if b.protocol == SPEC.protocol:
            if not settings.enabled:
                yield ("meters", b.index, "protocol"), f"meter {b.meter_id} uses MQTT but [mqtt] enabled = false"
            continue
        for key in _PAYG_KEYS:
            if getattr(b.section, key, None) is not None:
                yield ("meters", b.index, key), f"meter {b.meter_id}: only PAYG (MQTT) meters have a {key}"
    m = settings
    if m.share_group is not None and m.protocol != "5":
        yield ("mqtt", "share_group"), f"shared subscriptions need MQTT 5, but mqtt.protocol = {m.protocol!r}"
    if (m.tls_cert is None) != (m.tls_key is None):
        yield ("mqtt", "tls_cert" if m.tls_key is None else "tls_key"), "tls_cert and tls_key go together"
    if m.reconnect_min_delay > m.reconnect_max_delay:
        yield ("mqtt", "reconnect_min_delay"), (f"{m.reconnect_min_delay:g} s exceeds reconnect_max_delay "
                                                f"{m.reconnect_max_delay:g} s")
    if m.commands:
        balance = set(m.all_topics())
        if m.command_topic == m.reply_topic:
            yield ("mqtt", "reply_topic"), "reply_topic must differ from command_topic"
        for key in ("command_topic", "reply_topic"):
            if getattr(m, key) in balance:
                yield ("mqtt", key), f"{key} {getattr(m, key)!r} is also a balance topic"
    maps = object_maps()
    for b in meters:
        wmbus_map = getattr(b.section, "wmbus_map", None)
        if wmbus_map is None:
            continue
        if b.protocol != SPEC.protocol:
            yield ("meters", b.index, "wmbus_map"), f"meter {b.meter_id}: only MQTT (wmbusmeters) meters have a wmbus_map"
        elif wmbus_map not in maps:
            yield ("meters", b.index, "wmbus_map"), (f"unknown object map {wmbus_map!r} "
                                                     f"(known: {', '.join(sorted(maps))})")
        elif getattr(b.section, "payg", False):
            yield ("meters", b.index, "payg"), (f"meter {b.meter_id}: a wmbusmeters meter sends readings, not "
                                                "balances (payg = true contradicts wmbus_map)")
        elif not any(s.payload_format == "wmbusmeters" for s in m.sources) and m.payload_format != "wmbusmeters":
            yield ("meters", b.index, "wmbus_map"), ("a wmbusmeters meter needs a topic of payload_format "
                                                     "'wmbusmeters' ([[mqtt.sources]])")
    seen: dict[str, int] = {t: -1 for t in m.topics}
    for i, source in enumerate(m.sources):
        if source.topic in seen:
            yield ("mqtt", "sources", i, "topic"), f"topic template {source.topic!r} is listed twice"
        seen.setdefault(source.topic, i)


def _terms(settings: MqttSection, meter: MqttMeter | None = None) -> BalanceTerms:
    threshold = meter.low_credit_threshold if meter is not None else None
    drain = meter.max_drain_per_hour if meter is not None else None
    return BalanceTerms(currency=settings.currency,
                        low_credit_threshold=settings.low_credit_threshold if threshold is None else threshold,
                        max_drain_per_hour=settings.max_drain_per_hour if drain is None else drain,
                        currency_decimals=settings.currency_decimals)


def facts(binding: MeterBinding, settings: MqttSection, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
    """A PAYG meter: the topic it pushes on, the terms its balances are read on. A wmbusmeters
    meter: the topic of the wmbusmeters source, its object map, no balance."""
    topics = settings.all_topics()
    wmbus_map = binding.fields.wmbus_map
    if wmbus_map is not None:
        wmbus = [s.topic for s in settings.sources if s.payload_format == "wmbusmeters"] or topics or ["{meter_id}"]
        topic = wmbus[0].replace("{meter_id}", binding.meter_id)
        return MeterFacts(protocol=Protocol.WMBUS, address=topic, model=wmbus_map, where=topic,
                          objects=object_maps().get(wmbus_map))
    topic = (topics[0] if topics else "{meter_id}").replace("{meter_id}", binding.meter_id)
    return MeterFacts(protocol=Protocol.MQTT, address=topic, model="payg", where=topic,
                      balance=_terms(settings, binding.fields))


def payloads(settings: MqttSection) -> list[PayloadLayout]:
    """How the payloads of each balance topic template are written: [mqtt]'s defaults, then each
    of [[mqtt.sources]] with what it overrides."""
    m = settings
    future = timedelta(seconds=m.max_future)
    out = [PayloadLayout(t, m.payload_format, dict(m.field_mapping), m.timestamp, m.max_payload_bytes, future,
                         resolve_value_maps(m.value_maps), check_scales(m.scales))
           for t in m.topics]
    for src in m.sources:
        mapping = m.field_mapping if src.field_mapping is None else src.field_mapping
        maps = m.value_maps if src.value_maps is None else src.value_maps
        scales = m.scales if src.scales is None else src.scales
        out.append(PayloadLayout(src.topic, src.payload_format or m.payload_format, dict(mapping),
                                 src.timestamp or m.timestamp, m.max_payload_bytes, future,
                                 resolve_value_maps(maps), check_scales(scales)))
    return out


def build(ctx: BuildContext) -> list[MqttSubscriber]:
    """The subscriber, when [mqtt] is on and PAYG meters are configured; with a command tracker
    unless mqtt.commands = false."""
    m: MqttSection = ctx.settings
    payg = {b.meter_id for b in ctx.meters if b.protocol == SPEC.protocol}
    if not m.enabled or not payg:
        return []
    settings = MqttSettings(host=m.host, port=m.port, client_id=m.client_id or f"meter-gateway-{ctx.gateway_id}",
                            protocol=m.protocol, username=m.username, password=m.password,
                            tls_ca=str(m.tls_ca) if m.tls_ca else None,
                            tls_cert=str(m.tls_cert) if m.tls_cert else None,
                            tls_key=str(m.tls_key) if m.tls_key else None,
                            keepalive=m.keepalive, session_expiry=m.session_expiry, max_inflight_acks=m.max_inflight,
                            reconnect_min=m.reconnect_min_delay, reconnect_max=m.reconnect_max_delay)
    commands = None
    if m.commands and ctx.commands is not None:
        ports = ctx.commands
        # Correlation ids start with the gateway id: gateways sharing a store and a broker each
        # settle only their own commands.
        commands = CommandTracker(
            CommandSettings(command_topic=m.command_topic, reply_topic=m.reply_topic, timeout=m.command_timeout),
            persist=ports.save, claim=ports.claim, retry_unsent=ports.retry_unsent, load=ports.load,
            emit=ctx.emit, known_meters=payg,
            # The balance update a meter sends with its reply is not consumption (issue 27, item 12).
            replied=ports.replied,
            currencies=dict.fromkeys(payg, m.currency), currency_decimals=m.currency_decimals,
            origin=ctx.gateway_id)
    return [MqttSubscriber(settings, m.all_topics(), ctx.emit, known_meters=payg, share_group=m.share_group,
                           commands=commands)]


def details(drivers: Sequence[Driver]) -> dict[str, Any] | None:
    """The subscriber's own health: connection, counters, the last payload per meter."""
    return next((d.health() for d in drivers if isinstance(d, Subscriber)), None)


def config_rows(settings: MqttSection, meters: Sequence[MeterBinding]) -> list[tuple[str, str]]:
    """`config check`'s summary: PAYG meters, wmbusmeters meters (when there are any) and the broker."""
    mine = [b for b in meters if b.protocol == SPEC.protocol]
    wmbus = sum(1 for b in mine if b.fields.wmbus_map is not None)
    rows = [("PAYG (MQTT) meters", str(len(mine) - wmbus))]
    if wmbus:
        rows.append(("wmbusmeters (MQTT) meters", str(wmbus)))
    return [*rows, ("mqtt", f"{settings.host}:{settings.port}" if settings.enabled else "off")]


SPEC = DriverSpec(
    protocol="mqtt", source=Source.MQTT, settings=MqttSection, meter_fields=MqttMeter,
    build=build, facts=facts, check=check, payloads=payloads, balance_default=_terms, config_rows=config_rows,
    secrets={"METER_GATEWAY_MQTT_USERNAME": "username", "METER_GATEWAY_MQTT_PASSWORD": "password"},
    one_link=True, link_metric=LinkMetric("broker_connected", "1 if connected to the MQTT broker"), details=details,
)

__all__ = ["SPEC", "build", "check", "facts", "payloads"]
