"""The configuration of a registry of drivers: each driver's [<protocol>] section and meter keys.

`config_model(drivers)` is the `GatewayConfig` subclass that validates a file for those drivers:
one field per protocol (its spec's settings type), and meters whose keys are the common ones plus
every protocol's own. The registry is passed in (the composition root holds it), so the
configuration imports no driver. `bindings(config)` hands each meter to its driver as a
`MeterBinding`, with its protocol's keys as the spec's meter-field type.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from gateway.config.schema import GatewayConfig, MeterSection, SectionSpec
from gateway.model.meters import MeterBinding

#: Secrets the environment overrides whatever the drivers: variable -> (section, key).
SECRET_ENV: dict[str, tuple[str, str]] = {"METER_GATEWAY_STORAGE_DSN": ("storage", "dsn")}


def _fields_of(kind: type) -> dict[str, tuple[Any, FieldInfo]]:
    """A pydantic model's or a dataclass's fields as (annotation, FieldInfo) for create_model."""
    if issubclass(kind, BaseModel):
        return {name: (info.annotation, info) for name, info in kind.model_fields.items()}
    if not dataclasses.is_dataclass(kind):
        msg = f"{kind.__name__}: a driver's meter fields are a dataclass or a pydantic model"
        raise TypeError(msg)
    hints = typing.get_type_hints(kind, include_extras=True)
    out = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            info = Field(default=f.default, description=f.metadata.get("description"))
        elif f.default_factory is not dataclasses.MISSING:
            info = Field(default_factory=f.default_factory, description=f.metadata.get("description"))
        else:
            msg = f"{kind.__name__}.{f.name}: a meter key of a driver needs a default (other protocols' meters omit it)"
            raise TypeError(msg)
        out[f.name] = (hints[f.name], info)
    return out


def field_names(kind: type) -> tuple[str, ...]:
    """The keys a driver's meter-field type holds."""
    if issubclass(kind, BaseModel):
        return tuple(kind.model_fields)
    return tuple(f.name for f in dataclasses.fields(kind))  # type: ignore[arg-type]


def config_model(drivers: Mapping[str, SectionSpec]) -> type[GatewayConfig]:
    """The config class for `drivers` (made once per registry): a section per protocol, named by it,
    defaulting to the settings type's defaults, and meters that take every protocol's keys. A
    meter's protocol defaults to the first registered one."""
    return _config_model(tuple(drivers.items()))


@functools.cache
def _config_model(drivers: tuple[tuple[str, SectionSpec], ...]) -> type[GatewayConfig]:
    common = set(MeterSection.model_fields)
    keys: dict[str, tuple[Any, FieldInfo]] = {}
    owner: dict[str, str] = {}
    for protocol, spec in drivers:
        if protocol != spec.protocol or protocol in GatewayConfig.model_fields:
            msg = f"driver {spec.protocol!r} registered as {protocol!r}, or named like a section of the gateway's own"
            raise ValueError(msg)
        for name, field in _fields_of(spec.meter_fields).items():
            if name in common:
                msg = f"driver {protocol!r}: meter key {name!r} is one every meter has"
                raise ValueError(msg)
            if name in keys and keys[name][0] != field[0]:
                msg = f"drivers {owner[name]!r} and {protocol!r} both have a meter key {name!r}, of different types"
                raise ValueError(msg)
            keys.setdefault(name, field)
            owner.setdefault(name, protocol)
    first = drivers[0][0] if drivers else ""
    meter = create_model("MeterSection", __base__=MeterSection,  # type: ignore[call-overload]
                         protocol=(str, Field(default=first, description=MeterSection.model_fields["protocol"].description)),
                         **keys)
    meter.protocols = tuple(p for p, _ in drivers)
    sections = {p: (spec.settings, Field(default_factory=spec.settings)) for p, spec in drivers}
    model: type[GatewayConfig] = create_model("GatewayConfig", __base__=GatewayConfig,  # type: ignore[call-overload]
                                              meters=(list[meter], Field(default_factory=list)),  # type: ignore[valid-type]
                                              **sections)
    model.specs = dict(drivers)
    return model


def secret_env(drivers: Mapping[str, SectionSpec]) -> dict[str, tuple[str, str]]:
    """Every secret the environment overrides: the gateway's own, then each driver's."""
    out = dict(SECRET_ENV)
    for protocol, spec in drivers.items():
        out.update({var: (protocol, key) for var, key in spec.secrets.items()})
    return out


def _instance(kind: type, values: dict[str, Any]) -> Any:
    if issubclass(kind, BaseModel):
        return kind.model_construct(**values)  # validated already, as part of the meter
    return kind(**values)


def bindings(config: GatewayConfig) -> list[MeterBinding]:
    """Every configured meter, in file order, as the driver of its protocol sees it."""
    names = {p: field_names(spec.meter_fields) for p, spec in config.specs.items()}
    out = []
    for i, m in enumerate(config.meters):
        spec = config.specs[m.protocol]
        fields = _instance(spec.meter_fields, {name: getattr(m, name) for name in names[m.protocol]})
        out.append(MeterBinding(meter_id=m.meter_id, protocol=m.protocol, index=i, status=m.status, payg=m.payg,
                                fields=fields, section=m))
    return out


__all__ = ["SECRET_ENV", "bindings", "config_model", "field_names", "secret_env"]
