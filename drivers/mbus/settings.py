"""The [mbus] section and an M-Bus meter's keys, as the configuration validates them.

Example::

    [mbus]
    default_interval = 900

    [[mbus.buses]]
    name = "heat-1"
    serial_port = "/dev/ttyUSB0"          # a level converter: 2400 8E1 by default

    [[mbus.buses]]
    name = "water-cellar"
    host = "10.0.0.9"                     # an M-Bus-to-Ethernet converter
    port = 10001

    [[meters]]
    meter_id = "W-1"
    protocol = "mbus"
    utility = "water"
    bus = "water-cellar"
    primary_address = 5                   # or: secondary_address = "12345678" (id; + manufacturer, version, medium)
    mbus_map = "mbus_water"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusSection(_Section):
    """One M-Bus line: a serial port of this machine (level converter) or a TCP converter."""

    name: str = Field(min_length=1)
    transport: Literal["tcp", "serial"] | None = Field(
        default=None, description="serial (a local level converter) | tcp (an M-Bus-to-Ethernet converter); "
        "default serial with serial_port, tcp with host")
    host: str | None = Field(default=None, description="For tcp")
    port: int = Field(default=10001, ge=1, le=65535)
    serial_port: str | None = Field(default=None, description="Serial device, e.g. /dev/ttyUSB0")
    baudrate: Literal[300, 600, 1200, 2400, 4800, 9600, 19200, 38400] = 2400
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    timeout: float = Field(default=1.0, gt=0, le=60, description="Seconds to wait for each answer (a frame)")
    retries: int = Field(default=1, ge=0, le=5, description="Requests sent again after no answer or a garbled one "
                         "(a REQ_UD2 with the same FCB: the slave repeats its telegram)")

    @property
    def kind(self) -> Literal["tcp", "serial"]:
        if self.transport:
            return self.transport
        return "serial" if self.serial_port else "tcp"

    @property
    def address(self) -> str:
        return (self.serial_port or "") if self.kind == "serial" else f"{self.host}:{self.port}"


class MBusSection(_Section):
    default_interval: float = Field(default=900.0, gt=0, description="Seconds between reads unless a meter says")
    failures_before_lost: int = Field(default=3, ge=1, le=100, description="Failed reads in a row before comm_lost")
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown: float = Field(default=30.0, gt=0)
    breaker_max_cooldown: float = Field(default=900.0, gt=0)
    map_dirs: list[Path] = Field(default_factory=list, description="Folders of more object maps (*.toml)")
    meter_timezone: str = Field(default="UTC", description=(
        "The zone the meters' clocks keep (IANA, e.g. Europe/Berlin): their due-day dates and times are local"))
    buses: list[BusSection] = Field(default_factory=list)

    @field_validator("meter_timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {name!r} (an IANA name such as Europe/Berlin, or UTC)"
            raise ValueError(msg) from None
        return name


@dataclass(frozen=True, slots=True)
class MBusMeter:
    """An M-Bus meter's own keys in [[meters]]: its bus and one of its two addresses."""

    bus: str | None = None
    primary_address: Annotated[int, Ge(0), Le(250)] | None = None
    secondary_address: str | None = field(default=None, metadata={
        "description": "8 id digits, or 16 hex digits (id, manufacturer, version, medium); selects with CI 0x52"})
    mbus_map: str = field(default="mbus_water", metadata={"description": "Object map: mbus_water | mbus_heat | yours"})
    interval: Annotated[float, Gt(0)] | None = field(
        default=None, metadata={"description": "Seconds; default modbus.default_interval"})


__all__ = ["BusSection", "MBusMeter", "MBusSection"]
