"""The [dlms] section and a DLMS meter's keys, as the configuration validates them.

Example::

    [dlms]
    default_interval = 900
    key_file = "/etc/meter-gateway/dlms-keys.toml"   # mode 0600, owned by the service user
    state_dir = "var/dlms"                             # invocation counters, one small file per meter

    [[dlms.endpoints]]
    name = "substation-7"
    transport = "wrapper"                              # wrapper (TCP, IEC 62056-47) | hdlc_tcp | hdlc_serial
    host = "10.0.7.20"
    port = 4059

    [[meters]]
    meter_id = "E-0042"
    protocol = "dlms"
    endpoint = "substation-7"
    client_sap = 1
    server_logical = 1
    authentication = "hls_gmac"                        # lowest | low | hls_gmac (+ global ciphering)
    object_map = "dlms_generic"

The key file holds the secrets, never the configuration::

    [meters."E-0042"]
    authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
    encryption_key = "000102030405060708090A0B0C0D0E0F"
    # password = "12345678"                           # authentication = "low"

or the environment: DLMS_<METER_ID>_PASSWORD / _AUTHENTICATION_KEY / _ENCRYPTION_KEY (the meter id
upper-cased, every character but A-Z and 0-9 as "_"), which win over the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DlmsEndpoint(_Section):
    """A link to one or more DLMS meters: a TCP address (wrapper or HDLC) or a serial line (HDLC)."""

    name: str = Field(min_length=1)
    transport: Literal["wrapper", "hdlc_tcp", "hdlc_serial"] = Field(
        default="wrapper", description="wrapper (TCP, IEC 62056-47) | hdlc_tcp (terminal server) | hdlc_serial")
    host: str | None = Field(default=None, description="For wrapper and hdlc_tcp")
    port: int = Field(default=4059, ge=1, le=65535)
    device: str | None = Field(default=None, description="Serial device for hdlc_serial, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=115200)
    timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds per request")

    @property
    def address(self) -> str:
        return (self.device or "") if self.transport == "hdlc_serial" else f"{self.host}:{self.port}"


class DlmsSection(_Section):
    default_interval: float = Field(default=900.0, gt=0, description="Seconds between polls unless a meter says")
    default_align: bool = True
    failures_before_lost: int = Field(default=3, ge=1, le=100)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown: float = Field(default=30.0, gt=0)
    breaker_max_cooldown: float = Field(default=900.0, gt=0)
    reconnect_initial: float = Field(default=1.0, gt=0, description="First reconnect delay of an endpoint (s)")
    reconnect_max: float = Field(default=300.0, gt=0, description="Cap of the doubling reconnect delay (s)")
    key_file: Path | None = Field(default=None, description="TOML of per-meter secrets, readable by the owner only")
    state_dir: Path = Field(default=Path("var/dlms"), description="Invocation counters (put it under gateway.data_dir)")
    system_title: str | None = Field(default=None, description="The client's 8-byte system title in hex; default "
                                     "derived from gateway.id")
    object_dirs: list[Path] = Field(default_factory=list, description="Folders of more object maps (*.toml)")
    endpoints: list[DlmsEndpoint] = Field(default_factory=list)
    push_listen: str | None = Field(default=None, description="HOST:PORT where meters push DataNotifications "
                                    "(IEC 62056-47 wrapper), e.g. 0.0.0.0:4059; none: no listener")
    backfill_max_days: float = Field(default=7.0, ge=0, le=7, description="After a gap, read the missing intervals "
                                     "from the meter's load profile, at most this far back (0: off; VEE's stale_ts "
                                     "is 7 days)")
    backfill_pause: float = Field(default=0.0, ge=0, le=60, description="Seconds between the profile chunks of a "
                                  "backfill (6 h each), the endpoint's bus lock free")


@dataclass(frozen=True, slots=True)
class DlmsMeter:
    """A DLMS meter's own keys in [[meters]]."""

    endpoint: str | None = None
    client_sap: Annotated[int, Ge(1), Le(127)] = field(default=16, metadata={
        "description": "Client SAP: 16 public client, 1 management client"})
    server_logical: Annotated[int, Ge(0), Le(0x3FFF)] = 1
    server_physical: Annotated[int, Ge(0), Le(0x3FFF)] | None = field(default=None, metadata={
        "description": "HDLC lower address (often the serial number's last digits); wrapper: unused"})
    authentication: Literal["lowest", "low", "hls_gmac"] = "lowest"
    ciphering: bool | None = field(default=None, metadata={
        "description": "Global ciphering of APDUs (security suite 0); default on with hls_gmac"})
    object_map: str = "dlms_generic"
    classes: dict[str, int] = field(default_factory=dict, metadata={
        "description": "Interface class of an object where it is not the usual one (OBIS -> 1, 3, 4)"})
    frame_counter: str | None = field(default="0-0:43.1.0", metadata={
        "description": "The meter's frame counter object, read by the public client at start"})
    interval: Annotated[float, Gt(0)] | None = None
    align: bool | None = None
    system_title: str | None = field(default=None, metadata={
        "description": "The meter's 8-byte system title in hex: its ciphered pushes are known by it"})
    logical_device_name: str | None = field(default=None, metadata={
        "description": "The meter's logical device name (0-0:42.0.0), as text: its plain pushes are known by it"})
    load_profile: str = field(default="1-0:99.1.0", metadata={
        "description": "The load profile (class 7) the backfill after a gap reads"})


__all__ = ["DlmsEndpoint", "DlmsMeter", "DlmsSection"]
