"""Read, validate and cross-check a configuration file. Every problem, with key and line.

The drivers come in as a registry (`drivers`: protocol -> spec); the composition root binds
this build's registry (gateway.runtime.config), so nothing here names a protocol.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.locate import Path as KeyPath
from gateway.config.locate import dotted, index_lines, line_of, problems_from_validation
from gateway.config.profiles import load_profiles
from gateway.config.schema import GatewayConfig, SectionSpec
from gateway.config.sections import bindings, config_model, secret_env
from gateway.errors import ConfigError, ConfigProblem
from gateway.model.profiles import DeviceProfile


def load_config(path: Path, env: Mapping[str, str] | None = None, *, drivers: Mapping[str, SectionSpec]
                ) -> tuple[GatewayConfig, dict[str, DeviceProfile]]:
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
    return parse_config(text, source, env=os.environ if env is None else env, drivers=drivers)


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None, *,
                 drivers: Mapping[str, SectionSpec]) -> tuple[GatewayConfig, dict[str, DeviceProfile]]:
    """Validate `text` (from `source`) for the registered `drivers`; ConfigError lists every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(file)", _toml_line(exc), f"not valid TOML: {exc}")]) from exc
    _apply_env(data, env or {}, secret_env(drivers))
    index = index_lines(text)
    try:
        config = config_model(drivers).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc, index)) from exc
    dirs = [d for p, spec in drivers.items() for d in spec.profile_dirs(config.section(p))]
    try:
        profiles = load_profiles(tuple(dirs))
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


def _apply_env(data: dict[str, Any], env: Mapping[str, str], secrets: Mapping[str, tuple[str, str]]) -> None:
    for name, (section, key) in secrets.items():
        if env.get(name):
            sect = data.setdefault(section, {})
            if isinstance(sect, dict):
                sect[key] = env[name]


def cross_check(config: GatewayConfig, profiles: dict[str, DeviceProfile], index: dict[KeyPath, int]) -> list[ConfigProblem]:
    """Checks that span several keys: duplicates, then each driver's own (references between its
    section and its meters), then the store's."""
    problems: list[ConfigProblem] = []

    def add(path: KeyPath, message: str) -> None:
        problems.append(ConfigProblem(dotted(path), line_of(index, path) or line_of(index, path[:-1]), message))

    seen_ids: dict[str, int] = {}
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
    meters = bindings(config)
    for protocol, spec in config.specs.items():
        for path, message in spec.check(config.section(protocol), meters, profiles):
            add(path, message)
    if config.storage.backend == "timescale" and not config.storage.dsn:
        add(("storage", "dsn"), "backend 'timescale' needs a DSN (or env METER_GATEWAY_STORAGE_DSN)")
    return problems


__all__ = ["cross_check", "load_config", "parse_config"]
