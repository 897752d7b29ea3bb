"""The configuration of this build: gateway.config's loaders bound to the drivers of drivers.registry.

The configuration package takes the registry as an argument (it imports no driver); the
composition root holds it, so this is where the two meet. `GatewayConfig` here is the config class
of the registered drivers (a section per protocol: `config.modbus`, `config.mqtt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.registry import DRIVERS
from gateway.config import load
from gateway.config.load import cross_check
from gateway.config.schema import GatewayConfig as _Base
from gateway.config.schema import SectionSpec
from gateway.config.sections import config_model, secret_env
from gateway.model.profiles import DeviceProfile

if TYPE_CHECKING:
    # For type checkers, the registry's config class is the generic one (its driver sections are
    # attributes named by protocol: GatewayConfig.__getattr__).
    GatewayConfig = _Base
else:
    GatewayConfig = config_model(DRIVERS)

#: Every secret the environment overrides: the gateway's own and the registered drivers'.
SECRET_ENV: dict[str, tuple[str, str]] = secret_env(DRIVERS)


def load_config(path: Path, env: Mapping[str, str] | None = None, *, drivers: Mapping[str, SectionSpec] = DRIVERS
                ) -> tuple[_Base, dict[str, DeviceProfile]]:
    """`gateway.config.load.load_config` for the registered drivers."""
    return load.load_config(path, env, drivers=drivers)


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None, *,
                 drivers: Mapping[str, SectionSpec] = DRIVERS) -> tuple[_Base, dict[str, DeviceProfile]]:
    """`gateway.config.load.parse_config` for the registered drivers."""
    return load.parse_config(text, source, env, drivers=drivers)


__all__ = ["SECRET_ENV", "GatewayConfig", "cross_check", "load_config", "parse_config"]
