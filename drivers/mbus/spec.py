"""The wired M-Bus driver's spec: its [mbus] section, a meter's keys, the checks across them, what
an M-Bus meter means to the stages, and one `MBusPoller` per bus with active meters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import BuildContext, Driver, DriverSpec, LinkMetric, MeterFacts, Problem
from drivers.mbus.link import LinkSettings
from drivers.mbus.maps import object_maps
from drivers.mbus.master import secondary_pattern
from drivers.mbus.poller import MBusPoller, MBusTarget
from drivers.mbus.scan import scan
from drivers.mbus.settings import BusSection, MBusMeter, MBusSection
from drivers.polling.breaker import BreakerPolicy
from drivers.polling.health import health_dict
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.profiles import DeviceProfile


def _mine(meters: Sequence[MeterBinding]) -> Iterator[tuple[MeterBinding, MBusMeter]]:
    return ((b, b.fields) for b in meters if b.protocol == SPEC.protocol)


def check(settings: MBusSection, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
          ) -> Iterator[Problem]:
    """Buses (unique names, host or serial_port), maps, and each meter's bus, one address (unique
    per bus) and map."""
    buses: dict[str, int] = {}
    lines: dict[str, int] = {}
    for i, bus in enumerate(settings.buses):
        if bus.kind == "serial" and bus.serial_port:
            # One master per line: two buses on one port would talk over each other.
            if bus.serial_port in lines:
                yield ("mbus", "buses", i, "serial_port"), (f"{bus.serial_port} is already mbus.buses"
                                                            f"[{lines[bus.serial_port]}]: one bus per serial line")
            lines.setdefault(bus.serial_port, i)
        if bus.name in buses:
            yield ("mbus", "buses", i, "name"), f"bus name {bus.name!r} repeats mbus.buses[{buses[bus.name]}]"
        buses.setdefault(bus.name, i)
        if bus.kind == "serial" and not bus.serial_port:
            yield ("mbus", "buses", i, "serial_port"), "transport 'serial' needs serial_port (e.g. /dev/ttyUSB0)"
        if bus.kind == "tcp" and not bus.host:
            yield ("mbus", "buses", i, "host"), f"bus {bus.name!r}: transport 'tcp' needs host"
    try:
        maps = object_maps(tuple(settings.map_dirs))
    except (OSError, ValueError) as exc:
        yield ("mbus", "map_dirs"), str(exc)
        maps = {}
    seen: dict[tuple[str, str], int] = {}
    for b, m in _mine(meters):
        i = b.index
        if m.bus is None:
            yield ("meters", i), f"meter {b.meter_id}: an M-Bus meter needs 'bus'"
        elif m.bus not in buses:
            yield ("meters", i, "bus"), f"unknown bus {m.bus!r} (known: {', '.join(buses) or 'none defined'})"
        if (m.primary_address is None) == (m.secondary_address is None):
            yield ("meters", i), f"meter {b.meter_id}: give one of primary_address (0..250) or secondary_address"
        if m.secondary_address is not None:
            try:
                secondary_pattern(m.secondary_address)
            except ValueError as exc:
                yield ("meters", i, "secondary_address"), str(exc)
        at = (m.bus or "", f"p{m.primary_address}" if m.primary_address is not None else f"s{m.secondary_address}")
        if at in seen:
            yield ("meters", i), f"meter {b.meter_id}: same bus and address as meters[{seen[at]}]"
        seen.setdefault(at, i)
        if maps and m.mbus_map not in maps:
            yield ("meters", i, "mbus_map"), f"unknown object map {m.mbus_map!r} (known: {', '.join(sorted(maps))})"


def facts(binding: MeterBinding, settings: MBusSection, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
    m: MBusMeter = binding.fields
    bus = next((b for b in settings.buses if b.name == m.bus), None)
    primary = m.primary_address is not None
    address = f"p{m.primary_address}" if primary else f"s{m.secondary_address}"
    said = f"primary {m.primary_address}" if primary else f"secondary {m.secondary_address}"
    return MeterFacts(protocol=Protocol.MBUS, address=f"{bus.address if bus else '?'}/{address}", model=m.mbus_map,
                      where=f"{m.bus} ({bus.address if bus else '?'}) {said}", endpoint=m.bus,
                      unit=m.primary_address, interval=m.interval or settings.default_interval,
                      objects=object_maps(tuple(settings.map_dirs)).get(m.mbus_map))


def _link(bus: BusSection) -> LinkSettings:
    return LinkSettings(bus.kind, host=bus.host or "", port=bus.port, serial_port=bus.serial_port or "",
                        baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits)


def build(ctx: BuildContext) -> list[MBusPoller]:
    s: MBusSection = ctx.settings
    by_bus: dict[str, list[MBusTarget]] = {}
    for b, m in _mine(ctx.meters):
        if b.active and m.bus is not None:
            by_bus.setdefault(m.bus, []).append(MBusTarget(b.meter_id, m.primary_address, m.secondary_address,
                                                           m.interval or s.default_interval))
    breaker = BreakerPolicy(s.breaker_failures, s.breaker_cooldown, s.breaker_max_cooldown)
    times: dict[str, Any] = {k: v for k, v in (("clock", ctx.clock), ("monotonic", ctx.monotonic)) if v is not None}
    return [MBusPoller(bus.name, _link(bus), by_bus[bus.name], ctx.emit, timeout=bus.timeout, retries=bus.retries,
                       breaker=breaker,
                       failures_before_lost=s.failures_before_lost, zone=ZoneInfo(s.meter_timezone), **times)
            for bus in s.buses if by_bus.get(bus.name)]


def details(drivers: Sequence[Driver]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every M-Bus meter's health and its last read (secondary address, status, frames, records,
    manufacturer-specific data), by bus."""
    return {d.target: {m: {**health_dict(h), "last_read": d.last.get(m)} for m, h in d.health().items()}
            for d in drivers if isinstance(d, MBusPoller)}


def config_rows(settings: MBusSection, meters: Sequence[MeterBinding]) -> list[tuple[str, str]]:
    return [("mbus buses", str(len(settings.buses))), ("mbus meters", str(sum(1 for _ in _mine(meters))))]


SPEC = DriverSpec(
    protocol="mbus", source=Source.MBUS, settings=MBusSection, meter_fields=MBusMeter, build=build, facts=facts,
    check=check, config_rows=config_rows, details=details, scan=scan,
    link_metric=LinkMetric("mbus_bus_connected", "1 if the gateway holds the M-Bus line open", label="bus"),
)

__all__ = ["SPEC", "build", "check", "facts"]
