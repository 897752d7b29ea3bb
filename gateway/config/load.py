"""Read, validate and cross-check a configuration file. Every problem, with key and line."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.locate import Path as KeyPath
from gateway.config.locate import index_lines, line_of, problems_from_validation
from gateway.config.profiles import load_profiles
from gateway.config.schema import EndpointSection, GatewayConfig
from gateway.errors import ConfigError, ConfigProblem
from gateway.model.profiles import DeviceProfile

#: Secrets that environment variables override (so they stay out of the file).
SECRET_ENV: dict[str, tuple[str, str]] = {
    "METER_GATEWAY_STORAGE_DSN": ("storage", "dsn"),
    "METER_GATEWAY_MQTT_USERNAME": ("mqtt", "username"),
    "METER_GATEWAY_MQTT_PASSWORD": ("mqtt", "password"),
}


def load_config(path: Path, env: Mapping[str, str] | None = None) -> tuple[GatewayConfig, dict[str, DeviceProfile]]:
    """Load `path`; return the config and the device profiles it may use.

    Raises ConfigError listing every problem found (not only the first).
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("(file)", None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("(file)", None, f"cannot be read: {exc}")]) from exc
    return parse_config(text, source, env=os.environ if env is None else env)


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> tuple[GatewayConfig, dict[str, DeviceProfile]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(file)", _toml_line(exc), f"not valid TOML: {exc}")]) from exc
    _apply_env(data, env or {})
    index = index_lines(text)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc, index)) from exc
    try:
        profiles = load_profiles(tuple(config.modbus.profile_dirs))
    except ConfigError as exc:
        raise ConfigError(source, exc.problems) from exc
    problems = cross_check(config, profiles, index)
    if problems:
        raise ConfigError(source, problems)
    return config, profiles


def _toml_line(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python 3.14+; before that, parse the message
    if lineno is None and "line " in str(exc):
        try:
            lineno = int(str(exc).split("line ")[1].split(",")[0].split(")")[0])
        except ValueError:
            return None
    return lineno


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, (section, key) in SECRET_ENV.items():
        if env.get(name):
            sect = data.setdefault(section, {})
            if isinstance(sect, dict):
                sect[key] = env[name]


def cross_check(config: GatewayConfig, profiles: dict[str, DeviceProfile], index: dict[KeyPath, int]) -> list[ConfigProblem]:
    """Checks that span several keys: references between sections, duplicates."""
    problems: list[ConfigProblem] = []

    def add(path: KeyPath, message: str) -> None:
        from gateway.config.locate import dotted

        problems.append(ConfigProblem(dotted(path), line_of(index, path), message))

    endpoints: dict[str, int] = {}
    for i, ep in enumerate(config.modbus.endpoints):
        if ep.name in endpoints:
            add(("modbus", "endpoints", i, "name"), f"endpoint name {ep.name!r} repeats modbus.endpoints[{endpoints[ep.name]}]")
        endpoints.setdefault(ep.name, i)
        problems.extend(_endpoint_problems(i, ep, index))
    if config.modbus.breaker_cooldown > config.modbus.breaker_max_cooldown:
        add(("modbus", "breaker_cooldown"), f"{config.modbus.breaker_cooldown:g} s exceeds breaker_max_cooldown "
            f"{config.modbus.breaker_max_cooldown:g} s")
    seen_ids: dict[str, int] = {}
    seen_units: dict[tuple[str, int], int] = {}
    seen_devices: dict[tuple[str, str], int] = {}
    for i, m in enumerate(config.meters):
        if m.meter_id in seen_ids:
            add(("meters", i, "meter_id"), f"meter {m.meter_id!r} repeats meters[{seen_ids[m.meter_id]}]")
        seen_ids.setdefault(m.meter_id, i)
        if m.device_number is not None:
            device = (m.utility.value, m.device_number)
            if device in seen_devices:
                first = seen_devices[device]
                add(("meters", i, "device_number"),
                    f"device_number {m.device_number!r} is already on meters[{first}] ({config.meters[first].meter_id}); "
                    f"device numbers are unique per utility ({m.utility.value})")
            seen_devices.setdefault(device, i)
        if m.protocol == "modbus":
            if m.endpoint is None:
                add(("meters", i), f"meter {m.meter_id}: a Modbus meter needs 'endpoint'")
            elif m.endpoint not in endpoints:
                known = ", ".join(endpoints) or "none defined"
                add(("meters", i, "endpoint"), f"unknown endpoint {m.endpoint!r} (known: {known})")
            if m.unit is None:
                add(("meters", i), f"meter {m.meter_id}: a Modbus meter needs 'unit' (1..247)")
            if m.endpoint is not None and m.unit is not None:
                key = (m.endpoint, m.unit)
                if key in seen_units:
                    add(("meters", i, "unit"), f"unit {m.unit} on endpoint {m.endpoint!r} is already meters[{seen_units[key]}]")
                seen_units.setdefault(key, i)
            if m.profile not in profiles:
                add(("meters", i, "profile"), f"unknown profile {m.profile!r} (known: {', '.join(sorted(profiles))})")
        elif not config.mqtt.enabled:
            add(("meters", i, "protocol"), f"meter {m.meter_id} uses MQTT but [mqtt] enabled = false")
        if m.protocol != "mqtt":
            for payg_key in ("low_credit_threshold", "max_drain_per_hour"):
                if getattr(m, payg_key) is not None:
                    add(("meters", i, payg_key), f"meter {m.meter_id}: only PAYG (MQTT) meters have a {payg_key}")
    _mqtt_checks(config, add)
    if config.storage.backend == "timescale" and not config.storage.dsn:
        add(("storage", "dsn"), "backend 'timescale' needs a DSN (or env METER_GATEWAY_STORAGE_DSN)")
    return problems


def _mqtt_checks(config: GatewayConfig, add: Callable[[KeyPath, str], None]) -> None:
    """[mqtt] checks that span keys, reported through `add(path, message)`."""
    m = config.mqtt
    if m.share_group is not None and m.protocol != "5":
        add(("mqtt", "share_group"), f"shared subscriptions need MQTT 5, but mqtt.protocol = {m.protocol!r}")
    if (m.tls_cert is None) != (m.tls_key is None):
        add(("mqtt", "tls_cert" if m.tls_key is None else "tls_key"), "tls_cert and tls_key go together")
    if m.reconnect_min_delay > m.reconnect_max_delay:
        add(("mqtt", "reconnect_min_delay"), f"{m.reconnect_min_delay:g} s exceeds reconnect_max_delay "
            f"{m.reconnect_max_delay:g} s")
    if m.commands:
        balance = set(m.all_topics())
        if m.command_topic == m.reply_topic:
            add(("mqtt", "reply_topic"), "reply_topic must differ from command_topic")
        for key in ("command_topic", "reply_topic"):
            if getattr(m, key) in balance:
                add(("mqtt", key), f"{key} {getattr(m, key)!r} is also a balance topic")
    seen: dict[str, int] = {t: -1 for t in m.topics}
    for i, source in enumerate(m.sources):
        if source.topic in seen:
            add(("mqtt", "sources", i, "topic"), f"topic template {source.topic!r} is listed twice")
        seen.setdefault(source.topic, i)


def _endpoint_problems(i: int, ep: EndpointSection, index: dict[KeyPath, int]) -> list[ConfigProblem]:
    """A transport and the keys it needs (tcp/rtu_tcp: host; serial: serial_port)."""
    from gateway.config.locate import dotted

    legacy = {"socket": "tcp", "rtu": "rtu_tcp"}
    found: list[tuple[KeyPath, str]] = []
    if ep.framer and ep.transport and legacy[ep.framer] != ep.transport:
        found.append((("framer",), f"framer {ep.framer!r} contradicts transport {ep.transport!r} (use transport alone)"))
    if ep.kind == "serial" and not ep.serial_port:
        found.append((("transport",), "transport 'serial' needs serial_port (e.g. /dev/ttyUSB0)"))
    if ep.kind != "serial" and not ep.host:
        found.append((("name",), f"endpoint {ep.name!r}: transport {ep.kind!r} needs host"))
    base: KeyPath = ("modbus", "endpoints", i)
    return [ConfigProblem(dotted((*base, key[0])), line_of(index, (*base, key[0])) or line_of(index, base), msg)
            for key, msg in found]
