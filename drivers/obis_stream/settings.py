"""The [p1] and [sml] sections and a P1/SML meter's keys, as the configuration validates them.

Example::

    [[p1.ports]]
    name = "p1-flat-3"
    device = "/dev/ttyUSB0"        # a P1 cable; DSMR 4/5 talk 115200 8N1, DSMR 2.2/3 9600 7E1 (dsmr = "3")
    # tcp = "10.0.0.9:2001"        # or the port a ser2net serves it on

    [[sml.ports]]
    name = "sml-basement"
    tcp = "10.0.0.9:2002"

    [[meters]]
    meter_id = "E-1234"
    protocol = "p1"
    port = "p1-flat-3"             # one electricity meter per P1 port

    [[meters]]
    meter_id = "G-1234"            # the gas meter on the P1 meter's M-Bus channel 1
    utility = "gas"
    protocol = "p1"
    port = "p1-flat-3"
    mbus_channel = 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field

#: Serial line settings by DSMR version: (baudrate, bytesize, parity, stopbits).
DSMR_LINE = {"2.2": (9600, 7, "E", 1), "3": (9600, 7, "E", 1), "4": (115200, 8, "N", 1), "5": (115200, 8, "N", 1)}
#: An SML optical head: 9600 8N1 on every meter we know.
SML_LINE = (9600, 8, "N", 1)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortSection(_Section):
    """One serial port or TCP port (ser2net) a meter pushes telegrams on."""

    name: str = Field(min_length=1)
    device: str | None = Field(default=None, description="Serial device, e.g. /dev/ttyUSB0")
    tcp: str | None = Field(default=None, description="host:port of a serial-to-TCP server (ser2net)")
    dsmr: Literal["2.2", "3", "4", "5"] = Field(default="5", description="P1 only: the DSMR version; sets the "
                                                "serial defaults (4/5: 115200 8N1, 2.2/3: 9600 7E1)")
    encryption_key_env: str | None = Field(
        default=None, description="P1 only: the environment variable holding the meter's AES-128 key (32 hex "
        "digits), for encrypted telegrams (Luxembourg, Austria)")
    authentication_key_env: str | None = Field(
        default=None, description="P1 only: the variable holding its authentication key; default the public "
        "key of the Luxembourg specification")
    baudrate: int | None = Field(default=None, ge=300, le=1_000_000, description="Default by protocol/DSMR version")
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None

    @property
    def address(self) -> str:
        return f"tcp {self.tcp}" if self.tcp else f"serial {self.device}"


class StreamSection(_Section):
    ports: list[PortSection] = Field(default_factory=list)
    object_dirs: list[Path] = Field(default_factory=list, description="Folders of more object maps (*.toml)")
    reconnect_min_delay: float = Field(default=1.0, gt=0, le=3600, description="Seconds before the first reconnect")
    reconnect_max_delay: float = Field(default=60.0, gt=0, le=3600, description="Cap of the doubling reconnect delay")
    idle_timeout: float = Field(default=30.0, gt=0, le=3600,
                                description="Seconds without a byte before the link is reopened")


class P1Section(StreamSection):
    """The [p1] section."""


class SmlSection(StreamSection):
    """The [sml] section."""


@dataclass(frozen=True, slots=True)
class StreamMeter:
    """A P1 or SML meter's own keys in [[meters]]."""

    port: str | None = field(default=None, metadata={"description": "The [[p1.ports]]/[[sml.ports]] name it pushes on"})
    objects: str | None = field(default=None, metadata={
        "description": "Its object map (gateway/profiles/objects, object_dirs); default dsmr_p1 / sml_generic"})
    mbus_channel: Annotated[int, Ge(1), Le(4)] | None = field(default=None, metadata={
        "description": "P1 only: a gas/water meter on the P1 meter's M-Bus channel (0-n:24.2.1)"})


__all__ = ["DSMR_LINE", "SML_LINE", "P1Section", "PortSection", "SmlSection", "StreamMeter", "StreamSection"]
