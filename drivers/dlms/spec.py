"""The DLMS/COSEM driver's spec: its [dlms] section, a meter's keys, the checks across them, what a
DLMS meter means to the stages (its object map), and one `DlmsPoller` per endpoint with active meters.

Object maps are data files (gateway/profiles/objects/*.toml and `dlms.object_dirs`), read here with
the model's `ObjectMap.from_dict` (gateway/config/objects.py loads the same files for the config;
a driver may not import the config stage).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from drivers.base import BuildContext, Driver, DriverSpec, LinkMetric, MeterFacts, Poller, Problem
from drivers.dlms.backfill import BackfillPolicy
from drivers.dlms.commands import DlmsCommands
from drivers.dlms.cosem import normal_code, obis_bytes
from drivers.dlms.poller import DlmsPoller, DlmsTarget
from drivers.dlms.push import PushListener, PushSender, layouts_of, push_problems, sender
from drivers.dlms.reads import codes_to_read
from drivers.dlms.secrets import CounterFile, SecretError, key_file_problem, load_key_file, security_for
from drivers.dlms.settings import DlmsMeter, DlmsSection
from drivers.polling.breaker import BreakerPolicy
from drivers.polling.health import health_dict
from gateway.backoff import Backoff
from gateway.errors import ConfigError, ConfigProblem
from gateway.model import Protocol, Source
from gateway.model.meters import MeterBinding
from gateway.model.objectmaps import object_maps
from gateway.model.profiles import DeviceProfile


def _mine(meters: Sequence[MeterBinding]) -> Iterator[tuple[MeterBinding, DlmsMeter]]:
    return ((b, b.fields) for b in meters if b.protocol == SPEC.protocol)


def system_title(settings: DlmsSection, gateway_id: str) -> bytes:
    """The client's system title: configured, or "MGW" and 5 bytes of the gateway id's hash (stable)."""
    if settings.system_title:
        return bytes.fromhex(settings.system_title)
    return b"MGW" + hashlib.sha256(gateway_id.encode()).digest()[:5]


def check(settings: DlmsSection, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
          ) -> Iterator[Problem]:
    """Endpoints, the key file's mode, the system title, and each meter's endpoint, addresses,
    object map, classes and secrets."""
    endpoints: dict[str, int] = {}
    devices: dict[str, int] = {}
    for i, ep in enumerate(settings.endpoints):
        if ep.name in endpoints:
            yield ("dlms", "endpoints", i, "name"), f"endpoint name {ep.name!r} repeats dlms.endpoints[{endpoints[ep.name]}]"
        endpoints.setdefault(ep.name, i)
        if ep.transport == "hdlc_serial" and ep.device:
            # One bus lock per line: two endpoints on one device would talk over each other.
            if ep.device in devices:
                yield ("dlms", "endpoints", i, "device"), (f"serial line {ep.device} is already dlms.endpoints"
                                                           f"[{devices[ep.device]}]: put its meters on that endpoint")
            devices.setdefault(ep.device, i)
        if ep.transport == "hdlc_serial" and not ep.device:
            yield ("dlms", "endpoints", i, "device"), "transport 'hdlc_serial' needs device (e.g. /dev/ttyUSB0)"
        if ep.transport != "hdlc_serial" and not ep.host:
            yield ("dlms", "endpoints", i, "host"), f"transport {ep.transport!r} needs host"
    if settings.system_title is not None:
        try:
            if len(bytes.fromhex(settings.system_title)) != 8:
                yield ("dlms", "system_title"), "a system title is 8 bytes (16 hex digits)"
        except ValueError:
            yield ("dlms", "system_title"), "not hex"
    mine = list(_mine(meters))
    secrets: Mapping[str, Mapping[str, str]] = {}
    file_ok = True  # a refused key file is one problem, not one more per meter whose keys it holds
    if settings.key_file is not None and mine:
        problem = key_file_problem(settings.key_file)
        if problem:
            file_ok = False
            yield ("dlms", "key_file"), problem
        else:
            try:
                secrets = load_key_file(settings.key_file)
            except SecretError as exc:
                file_ok = False
                yield ("dlms", "key_file"), str(exc)
    try:
        maps = object_maps(tuple(settings.object_dirs))
    except (ValueError, OSError) as exc:
        yield ("dlms", "object_dirs"), str(exc)
        maps = {}
    seen: dict[tuple[str, int, int | None, int], int] = {}
    for b, m in mine:
        i = b.index
        if m.endpoint is None:
            yield ("meters", i), f"meter {b.meter_id}: a DLMS meter needs 'endpoint'"
        elif m.endpoint not in endpoints:
            yield ("meters", i, "endpoint"), f"unknown endpoint {m.endpoint!r} (known: {', '.join(endpoints) or 'none defined'})"
        else:
            at = (m.endpoint, m.server_logical, m.server_physical, m.client_sap)
            if at in seen:
                yield ("meters", i, "server_logical"), f"same endpoint and addresses as meters[{seen[at]}]"
            seen.setdefault(at, i)
        if maps and m.object_map not in maps:
            yield ("meters", i, "object_map"), f"unknown object map {m.object_map!r} (known: {', '.join(sorted(maps))})"
        for code, cls in m.classes.items():
            try:
                obis_bytes(code)
            except ValueError as exc:
                yield ("meters", i, "classes"), str(exc)
            if cls not in (1, 3, 4):
                yield ("meters", i, "classes"), f"{code}: class {cls} is not read as a value (1, 3 or 4)"
        if m.authentication == "hls_gmac" and m.ciphering is False:
            yield ("meters", i, "ciphering"), "hls_gmac needs the keys of global ciphering; leave ciphering on"
        if file_ok and (m.authentication != "lowest" or m.ciphering):
            try:
                security_for(b.meter_id, m.authentication, m.ciphering, b"\0" * 8, secrets, os.environ)
            except SecretError as exc:
                yield ("meters", i, "authentication"), str(exc)
    yield from push_problems(settings, mine)


def facts(binding: MeterBinding, settings: DlmsSection, profiles: Mapping[str, DeviceProfile]) -> MeterFacts:
    m: DlmsMeter = binding.fields
    ep = next((e for e in settings.endpoints if e.name == m.endpoint), None)
    where = f"{m.endpoint} ({ep.address if ep else '?'}) logical {m.server_logical}"
    try:
        objects = object_maps(tuple(settings.object_dirs)).get(m.object_map)
    except (ValueError, OSError):
        objects = None
    return MeterFacts(protocol=Protocol.DLMS, address=f"{ep.address if ep else '?'}/{m.server_logical}",
                      model=m.object_map, where=where, endpoint=m.endpoint, unit=m.server_logical,
                      interval=m.interval or settings.default_interval, objects=objects)


def build(ctx: BuildContext) -> list[DlmsPoller]:
    """One poller per endpoint with active meters. Secrets are read here (key file, environment)."""
    try:
        return _build(ctx)
    except SecretError as exc:  # the key file changed since the config was checked
        raise ConfigError("[dlms]", [ConfigProblem("dlms.key_file", None, str(exc))]) from None


def _build(ctx: BuildContext) -> list[DlmsPoller]:
    s: DlmsSection = ctx.settings
    maps = object_maps(tuple(s.object_dirs))
    mine = [(b, m) for b, m in _mine(ctx.meters) if b.active]
    secrets = load_key_file(s.key_file) if mine else {}
    title = system_title(s, ctx.gateway_id)
    by_endpoint: dict[str, list[DlmsTarget]] = {}
    for b, m in mine:
        assert m.endpoint is not None  # cross-checked at load
        codes = [spec.code for spec in maps[m.object_map].objects]
        classes = {normal_code(c): v for c, v in m.classes.items()}
        by_endpoint.setdefault(m.endpoint, []).append(DlmsTarget(
            meter_id=b.meter_id, client_sap=m.client_sap, server_logical=m.server_logical,
            server_physical=m.server_physical,
            security=security_for(b.meter_id, m.authentication, m.ciphering, title, secrets, os.environ),
            objects=tuple(codes_to_read(codes, classes)), interval=m.interval or s.default_interval,
            align=s.default_align if m.align is None else m.align,
            counter=CounterFile(s.state_dir / f"{b.meter_id}.invocation"), frame_counter=m.frame_counter,
            fixed=frozenset(classes)))
    breaker = BreakerPolicy(s.breaker_failures, s.breaker_cooldown, s.breaker_max_cooldown)
    times: dict[str, Any] = {k: v for k, v in (("clock", ctx.clock), ("monotonic", ctx.monotonic)) if v is not None}
    backfill = BackfillPolicy(max_window=timedelta(days=s.backfill_max_days), pause=s.backfill_pause,
                              profiles={b.meter_id: m.load_profile for b, m in mine}) if s.backfill_max_days else None
    return [DlmsPoller(ep, by_endpoint[ep.name], ctx.emit, breaker=breaker, failures_before_lost=s.failures_before_lost,
                       backoff=Backoff(s.reconnect_initial, max(s.reconnect_initial, s.reconnect_max)),
                       backfill=backfill, since=ctx.last_reading, **times)
            for ep in s.endpoints if ep.name in by_endpoint]


def _senders(ctx: BuildContext, s: DlmsSection) -> list[PushSender]:
    maps, title = object_maps(tuple(s.object_dirs)), system_title(s, ctx.gateway_id)
    mine = [(b, m) for b, m in _mine(ctx.meters) if b.active]
    secrets = load_key_file(s.key_file) if mine else {}
    return [sender(b.meter_id, m, security_for(b.meter_id, m.authentication, m.ciphering, title, secrets, os.environ),
                   [spec.code for spec in maps[m.object_map].objects]) for b, m in mine]


def build_all(ctx: BuildContext) -> list[DlmsPoller | PushListener | DlmsCommands]:
    """The pollers, the PAYG commands of their payg meters, and the push listener when [dlms]
    push_listen is set."""
    pollers = build(ctx)
    s: DlmsSection = ctx.settings
    payg = [b.meter_id for b, _ in _mine(ctx.meters) if b.active and b.payg]
    intervals = {b.meter_id: m.interval or s.default_interval for b, m in _mine(ctx.meters)}
    commands = ([DlmsCommands(pollers, payg, ctx.commands, ctx.emit, intervals=intervals, origin=ctx.gateway_id,
                              clock=ctx.clock)]
                if ctx.commands is not None and payg else [])
    if not s.push_listen:
        return [*pollers, *commands]
    try:
        senders = _senders(ctx, s)
    except SecretError as exc:
        raise ConfigError("[dlms]", [ConfigProblem("dlms.key_file", None, str(exc))]) from None
    return [*pollers, *commands, PushListener(s.push_listen, senders, layouts_of(pollers), ctx.emit, clock=ctx.clock)]


def details(drivers: Sequence[Driver]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every DLMS meter's health by endpoint, with its clock offset (no secrets: none are here)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for d in drivers:
        if isinstance(d, DlmsPoller) and isinstance(d, Poller):
            out[d.target] = {m: {**health_dict(h), "clock_offset_s": d.clock_offset(m),
                                 "last_apdu": d.last_apdu(m)[:256].hex()} for m, h in d.health().items()}
    return out


def config_rows(settings: DlmsSection, meters: Sequence[MeterBinding]) -> list[tuple[str, str]]:
    return [("dlms endpoints", str(len(settings.endpoints))), ("dlms meters", str(sum(1 for _ in _mine(meters))))]


SPEC = DriverSpec(
    protocol="dlms", source=Source.DLMS, settings=DlmsSection, meter_fields=DlmsMeter,
    build=build_all, facts=facts, check=check, config_rows=config_rows, details=details,
    link_metric=LinkMetric("dlms_endpoint_connected", "1 if the last connection to the DLMS endpoint opened",
                           label="endpoint"),
)

__all__ = ["SPEC", "build", "build_all", "check", "facts", "object_maps", "system_title"]
