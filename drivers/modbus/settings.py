"""The [modbus] section and a Modbus meter's keys, as the configuration validates them.

Example::

    [modbus]
    default_interval = 900                    # a 15-minute read, aligned to :00, :15, :30, :45

    [[modbus.endpoints]]
    name = "rs485-gw-1"
    host = "10.0.0.7"                           # a TCP-to-RS-485 gateway
    transport = "rtu_tcp"

    [[meters]]
    meter_id = "M-5678"
    protocol = "modbus"                         # the default
    endpoint = "rs485-gw-1"
    unit = 3
    profile = "sdm630"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointSection(_Section):
    """A Modbus TCP server, a TCP-to-RS-485 gateway, or a serial line of this machine."""

    name: str = Field(min_length=1)
    transport: Literal["tcp", "rtu_tcp", "serial"] | None = Field(
        default=None, description="tcp (Modbus TCP) | rtu_tcp (RTU over TCP: transparent serial gateways) | "
        "serial (a local RS-485 line); default tcp, or what `framer` says")
    framer: Literal["socket", "rtu"] | None = Field(default=None, description="Older spelling: socket = tcp, rtu = rtu_tcp")
    host: str | None = Field(default=None, description="For tcp and rtu_tcp")
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = Field(default=None, description="Serial device, e.g. /dev/ttyUSB0 (transport serial)")
    baudrate: int = Field(default=9600, ge=300, le=1_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: float = Field(default=1.0, gt=0, le=60, description="Seconds per request")
    inter_request_delay: float | None = Field(
        default=None, ge=0, le=5, description="Quiet seconds between the end of one answer and the next request on "
        "this bus (some meters need 0.02-0.05); default `pause`, 0")
    pause: float = Field(default=0.0, ge=0, le=5, description="Older spelling of inter_request_delay")
    max_registers_per_request: int | None = Field(
        default=None, ge=1, le=125, description="Registers one read may span on this bus, below each profile's own "
        "(gateways and meters that refuse long reads); default each profile's")
    retries: int = Field(default=1, ge=0, le=5, description="Further attempts after a timeout or 'device busy'")
    retry_delay: float = Field(default=0.05, gt=0, le=10, description="First retry delay; doubles, with jitter")
    late_reply_grace: float | None = Field(
        default=None, ge=0, le=10, description="Quiet seconds after a timeout on RTU framing so a late answer is "
        "dropped; default half the timeout (0 on Modbus TCP, which has transaction ids)")
    max_gap: int | None = Field(default=None, ge=0, le=100,
                                description="Registers of hole one read may span; default each profile's own")

    @property
    def kind(self) -> Literal["tcp", "rtu_tcp", "serial"]:
        """The transport, with the older `framer` key resolved."""
        if self.transport:
            return self.transport
        return "rtu_tcp" if self.framer == "rtu" else "tcp"

    @property
    def quiet(self) -> float:
        """Seconds between one answer and the next request (inter_request_delay, or the older pause)."""
        return self.pause if self.inter_request_delay is None else self.inter_request_delay

    @property
    def address(self) -> str:
        return (self.serial_port or "") if self.kind == "serial" else f"{self.host}:{self.port}"


class ModbusSection(_Section):
    default_interval: float = Field(default=60.0, gt=0, description="Seconds between polls unless a meter says")
    default_align: bool = Field(default=True, description="Poll at interval boundaries; stamp readings with them")
    default_jitter: float | None = Field(
        default=None, ge=0, description="Seconds after the boundary over which meters spread their polls; "
        "default 10 % of the interval, at most 5 s")
    failures_before_lost: int = Field(default=3, ge=1, le=100, description="Failed polls in a row before comm_lost")
    breaker_failures: int = Field(default=5, ge=1, le=1000,
                                  description="Failed polls in a row before a meter's circuit breaker opens")
    breaker_cooldown: float = Field(default=10.0, gt=0, description="Seconds an open breaker waits before a probe")
    breaker_max_cooldown: float = Field(default=300.0, gt=0, description="Cap of the doubling cool-down")
    profile_dirs: list[Path] = Field(default_factory=list)
    endpoints: list[EndpointSection] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ModbusMeter:
    """A Modbus meter's own keys in [[meters]]."""

    endpoint: str | None = None
    unit: Annotated[int, Ge(1), Le(247)] | None = None
    profile: str = "generic"
    interval: Annotated[float, Gt(0)] | None = field(
        default=None, metadata={"description": "Seconds; default modbus.default_interval"})
    align: bool | None = field(default=None, metadata={"description": "Default modbus.default_align"})
    jitter: Annotated[float, Ge(0)] | None = field(default=None, metadata={"description": "Default modbus.default_jitter"})


__all__ = ["EndpointSection", "ModbusMeter", "ModbusSection"]
