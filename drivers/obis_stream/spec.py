"""The P1 and SML drivers' specs: their sections, a meter's keys, the checks across them, what a
meter means to the stages (its object map), and one StreamReader per port with meters on it."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from drivers.base import BuildContext, Driver, DriverSpec, LinkMetric, MeterFacts, Problem
from drivers.obis_stream.link import split_tcp
from drivers.obis_stream.maps import object_maps
from drivers.obis_stream.reader import P1, SML, Codec, StreamReader, p1_codec
from drivers.obis_stream.settings import P1Section, SmlSection, StreamMeter, StreamSection
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.profiles import DeviceProfile

DEFAULT_MAP = {"p1": "dsmr_p1", "sml": "sml_generic"}


def _mine(protocol: str, meters: Sequence[MeterBinding]) -> Iterator[MeterBinding]:
    return (b for b in meters if b.protocol == protocol)


def _check(protocol: str) -> Any:
    def check(settings: StreamSection, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
              ) -> Iterator[Problem]:
        """Ports are named once and say one of device/tcp; a meter names a port of this section and a
        known map; a port carries one meter (plus, on P1, one per M-Bus channel)."""
        names: dict[str, int] = {}
        for i, port in enumerate(settings.ports):
            if port.name in names:
                yield (protocol, "ports", i, "name"), f"port {port.name!r} is listed twice"
            names.setdefault(port.name, i)
            if (port.device is None) == (port.tcp is None):
                yield (protocol, "ports", i), f"port {port.name!r} needs one of device or tcp"
            if protocol != "p1" and port.encryption_key_env is not None:
                yield (protocol, "ports", i, "encryption_key_env"), "only P1 telegrams are encrypted"
            if port.tcp is not None:
                try:
                    split_tcp(port.tcp)
                except ValueError as exc:
                    yield (protocol, "ports", i, "tcp"), str(exc)
        maps, problems = object_maps(settings.object_dirs)
        for problem in problems:
            yield (protocol, "object_dirs"), problem
        taken: dict[tuple[str, int], str] = {}
        for b in meters:
            f = b.fields
            if b.protocol != protocol:
                if protocol == "p1" and getattr(b.section, "mbus_channel", None) is not None and b.protocol != "sml":
                    yield ("meters", b.index, "mbus_channel"), f"meter {b.meter_id}: only P1 meters have an mbus_channel"
                continue
            if f.port is None:
                yield ("meters", b.index), f"meter {b.meter_id}: a {protocol} meter needs 'port'"
            elif f.port not in names:
                known = ", ".join(names) or f"none: add [[{protocol}.ports]]"
                yield ("meters", b.index, "port"), f"meter {b.meter_id}: no {protocol} port {f.port!r} ({known})"
            else:
                slot = (f.port, f.mbus_channel or 0)
                if slot in taken:
                    what = f"M-Bus channel {slot[1]}" if slot[1] else "its meter"
                    yield ("meters", b.index, "port"), (f"meter {b.meter_id}: port {f.port!r} already carries "
                                                        f"{taken[slot]} as {what} (one meter per port)")
                taken.setdefault(slot, b.meter_id)
            if f.mbus_channel is not None and protocol != "p1":
                yield ("meters", b.index, "mbus_channel"), f"meter {b.meter_id}: only P1 meters have an mbus_channel"
            name = f.objects or DEFAULT_MAP[protocol]
            if name not in maps:
                yield ("meters", b.index, "objects"), (f"meter {b.meter_id}: unknown object map {name!r} "
                                                       f"(known: {', '.join(sorted(maps))})")
    return check


def _facts(protocol: str, registry: Protocol) -> Any:
    def facts(binding: MeterBinding, settings: StreamSection, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
        f: StreamMeter = binding.fields
        maps, _ = object_maps(settings.object_dirs)
        name = f.objects or DEFAULT_MAP[protocol]
        port = next((p for p in settings.ports if p.name == f.port), None)
        where = f"{protocol} port {f.port}" + (f" ({port.address})" if port else "")
        if f.mbus_channel:
            where += f" M-Bus channel {f.mbus_channel}"
        address = f"{f.port}/{f.mbus_channel}" if f.mbus_channel else str(f.port)
        return MeterFacts(protocol=registry, address=address, model=name, where=where, objects=maps.get(name))
    return facts


def _build(codec: Codec) -> Any:
    def build(ctx: BuildContext) -> list[StreamReader]:
        s: StreamSection = ctx.settings
        out = []
        for port in s.ports:
            meters = {b.fields.mbus_channel or 0: b.meter_id for b in _mine(codec.protocol, ctx.meters)
                      if b.active and b.fields.port == port.name}
            if meters:
                # Keys come from the environment when the drivers are built, never from the file.
                mine = p1_codec(port, os.environ) if codec is P1 else codec
                devices = {b.meter_id: str(b.section.device_number) for b in ctx.meters
                           if b.meter_id in meters.values() and not b.fields.mbus_channel
                           and getattr(b.section, "device_number", None)}
                out.append(StreamReader(mine, port, s, meters, ctx.emit, ctx.clock, device_numbers=devices))
        return out
    return build


def _rows(protocol: str) -> Any:
    def config_rows(settings: StreamSection, meters: Sequence[MeterBinding]) -> list[tuple[str, str]]:
        n = sum(1 for _ in _mine(protocol, meters))
        return [(f"{protocol.upper()} meters", str(n)), (f"{protocol} ports", str(len(settings.ports)))] if n else []
    return config_rows


def details(drivers: Sequence[Driver]) -> list[dict[str, Any]]:
    return [{"port": d.port.name, "where": d.port.address, "connected": d.connected, "telegrams": d.telegrams,
             "errors": dict(d.errors), "meters": list(d.meter_ids())}
            for d in drivers if isinstance(d, StreamReader)]


P1_SPEC = DriverSpec(protocol="p1", source=Source.P1, settings=P1Section, meter_fields=StreamMeter,
                     build=_build(P1), facts=_facts("p1", Protocol.P1), check=_check("p1"), config_rows=_rows("p1"),
                     link_metric=LinkMetric("p1_port_connected", "1 while the P1 port is open", "port"),
                     details=details)
SML_SPEC = DriverSpec(protocol="sml", source=Source.SML, settings=SmlSection, meter_fields=StreamMeter,
                      build=_build(SML), facts=_facts("sml", Protocol.SML), check=_check("sml"),
                      config_rows=_rows("sml"),
                      link_metric=LinkMetric("sml_port_connected", "1 while the SML port is open", "port"),
                      details=details)

__all__ = ["P1_SPEC", "SML_SPEC"]
