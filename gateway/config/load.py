"""Read, validate and cross-check a configuration file. Every problem, with key and line."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.locate import Path as KeyPath
from gateway.config.locate import index_lines, line_of, problems_from_validation
from gateway.config.profiles import load_profiles
from gateway.config.schema import GatewayConfig
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
    seen_ids: dict[str, int] = {}
    seen_units: dict[tuple[str, int], int] = {}
    for i, m in enumerate(config.meters):
        if m.meter_id in seen_ids:
            add(("meters", i, "meter_id"), f"meter {m.meter_id!r} repeats meters[{seen_ids[m.meter_id]}]")
        seen_ids.setdefault(m.meter_id, i)
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
    if config.storage.backend == "timescale" and not config.storage.dsn:
        add(("storage", "dsn"), "backend 'timescale' needs a DSN (or env METER_GATEWAY_STORAGE_DSN)")
    return problems
