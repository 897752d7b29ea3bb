"""The Modbus driver's spec: its [modbus] section, a meter's keys, the checks across them, what a
Modbus meter means to the stages, and one `ModbusPoller` per endpoint with active meters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.base import BuildContext, Driver, DriverSpec, LinkMetric, MeterFacts, Poller, Problem
from drivers.modbus.connection import ModbusEndpoint, SerialLine
from drivers.modbus.poller import ModbusPoller, PollTarget
from drivers.modbus.scan import scan
from drivers.modbus.settings import EndpointSection, ModbusMeter, ModbusSection
from drivers.polling.breaker import BreakerPolicy
from drivers.polling.health import health_dict
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.profiles import DeviceProfile

_REGISTRY_PROTOCOL = {"tcp": Protocol.MODBUS_TCP, "rtu_tcp": Protocol.MODBUS_RTU_TCP, "serial": Protocol.MODBUS_RTU}


def _mine(meters: Sequence[MeterBinding]) -> Iterator[tuple[MeterBinding, ModbusMeter]]:
    return ((b, b.fields) for b in meters if b.protocol == SPEC.protocol)


def check(settings: ModbusSection, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
          ) -> Iterator[Problem]:
    """Endpoints (unique names, the keys their transport needs), the breaker, and each meter's
    endpoint, unit (unique per endpoint) and profile."""
    endpoints: dict[str, int] = {}
    for i, ep in enumerate(settings.endpoints):
        if ep.name in endpoints:
            yield ("modbus", "endpoints", i, "name"), f"endpoint name {ep.name!r} repeats modbus.endpoints[{endpoints[ep.name]}]"
        endpoints.setdefault(ep.name, i)
        for key, message in _endpoint_problems(ep):
            yield ("modbus", "endpoints", i, key), message
    if settings.breaker_cooldown > settings.breaker_max_cooldown:
        yield ("modbus", "breaker_cooldown"), (f"{settings.breaker_cooldown:g} s exceeds breaker_max_cooldown "
                                               f"{settings.breaker_max_cooldown:g} s")
    seen_units: dict[tuple[str, int], int] = {}
    for b, m in _mine(meters):
        i = b.index
        if m.endpoint is None:
            yield ("meters", i), f"meter {b.meter_id}: a Modbus meter needs 'endpoint'"
        elif m.endpoint not in endpoints:
            known = ", ".join(endpoints) or "none defined"
            yield ("meters", i, "endpoint"), f"unknown endpoint {m.endpoint!r} (known: {known})"
        if m.unit is None:
            yield ("meters", i), f"meter {b.meter_id}: a Modbus meter needs 'unit' (1..247)"
        if m.endpoint is not None and m.unit is not None:
            at = (m.endpoint, m.unit)
            if at in seen_units:
                yield ("meters", i, "unit"), f"unit {m.unit} on endpoint {m.endpoint!r} is already meters[{seen_units[at]}]"
            seen_units.setdefault(at, i)
        if m.profile not in profiles:
            yield ("meters", i, "profile"), f"unknown profile {m.profile!r} (known: {', '.join(sorted(profiles))})"


def _endpoint_problems(ep: EndpointSection) -> list[tuple[str, str]]:
    """A transport and the keys it needs (tcp/rtu_tcp: host; serial: serial_port)."""
    legacy = {"socket": "tcp", "rtu": "rtu_tcp"}
    found = []
    if ep.framer and ep.transport and legacy[ep.framer] != ep.transport:
        found.append(("framer", f"framer {ep.framer!r} contradicts transport {ep.transport!r} (use transport alone)"))
    if ep.kind == "serial" and not ep.serial_port:
        found.append(("transport", "transport 'serial' needs serial_port (e.g. /dev/ttyUSB0)"))
    if ep.kind != "serial" and not ep.host:
        found.append(("name", f"endpoint {ep.name!r}: transport {ep.kind!r} needs host"))
    return found


def facts(binding: MeterBinding, settings: ModbusSection, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
    """A Modbus meter: its endpoint and unit, its poll interval, its register map."""
    m: ModbusMeter = binding.fields
    ep = next((e for e in settings.endpoints if e.name == m.endpoint), None)
    return MeterFacts(
        protocol=_REGISTRY_PROTOCOL[ep.kind] if ep is not None else Protocol.MODBUS_TCP,
        address=f"{ep.address if ep else '?'}/{m.unit}", model=m.profile,
        where=f"{m.endpoint} ({ep.address if ep else '?'}) unit {m.unit}",
        endpoint=m.endpoint, unit=m.unit, interval=m.interval or settings.default_interval,
        profile=profiles.get(m.profile))


def build(ctx: BuildContext) -> list[ModbusPoller]:
    """One poller per endpoint that has active meters; inactive meters are not polled."""
    s: ModbusSection = ctx.settings
    by_endpoint: dict[str, list[PollTarget]] = {}
    for b, m in _mine(ctx.meters):
        if not b.active:
            continue
        assert m.endpoint is not None and m.unit is not None  # cross-checked at load
        by_endpoint.setdefault(m.endpoint, []).append(PollTarget(
            meter_id=b.meter_id, unit=m.unit, profile=ctx.profiles[m.profile],
            interval=m.interval or s.default_interval,
            align=s.default_align if m.align is None else m.align,
            jitter=s.default_jitter if m.jitter is None else m.jitter))
    breaker = BreakerPolicy(s.breaker_failures, s.breaker_cooldown, s.breaker_max_cooldown)
    times: dict[str, Any] = {k: v for k, v in (("clock", ctx.clock), ("monotonic", ctx.monotonic)) if v is not None}
    pollers = []
    for ep in s.endpoints:
        targets = by_endpoint.get(ep.name)
        if not targets:
            continue
        serial = (SerialLine(ep.serial_port, ep.baudrate, ep.parity, ep.stopbits, ep.bytesize)
                  if ep.kind == "serial" and ep.serial_port else None)
        endpoint = ModbusEndpoint(name=ep.name, host=ep.host or "", port=ep.port, transport=ep.kind,
                                  serial=serial, timeout=ep.timeout, pause=ep.quiet, retries=ep.retries,
                                  retry_delay=ep.retry_delay, late_reply_grace=ep.late_reply_grace,
                                  max_gap=ep.max_gap, max_registers=ep.max_registers_per_request)
        pollers.append(ModbusPoller(endpoint, targets, ctx.emit, breaker=breaker,
                                    failures_before_lost=s.failures_before_lost, **times))
    return pollers


def details(drivers: Sequence[Driver]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every polled meter's driver health, by endpoint."""
    return {d.target: {m: health_dict(h) for m, h in d.health().items()} for d in drivers if isinstance(d, Poller)}


def profile_dirs(settings: ModbusSection) -> list[Path]:
    """The folders of more device profiles (modbus.profile_dirs)."""
    return list(settings.profile_dirs)


def config_rows(settings: ModbusSection, meters: Sequence[MeterBinding]) -> list[tuple[str, str]]:
    """`config check`'s summary: endpoints and meters."""
    return [("modbus endpoints", str(len(settings.endpoints))), ("modbus meters", str(sum(1 for _ in _mine(meters))))]


SPEC = DriverSpec(
    protocol="modbus", source=Source.MODBUS, settings=ModbusSection, meter_fields=ModbusMeter,
    build=build, facts=facts, check=check, profile_dirs=profile_dirs, config_rows=config_rows,
    link_metric=LinkMetric("modbus_endpoint_connected", "1 if the gateway holds a connection to the Modbus endpoint "
                           "(bus)", label="endpoint"),
    details=details, scan=scan,
)

__all__ = ["SPEC", "build", "check", "facts"]
