"""Meters and assignments (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.model.readings import Reading


class Utility(StrEnum):
    ELECTRICITY = "electricity"
    WATER = "water"
    GAS = "gas"
    HEAT = "heat"


class MeterStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    MAINTENANCE = "maintenance"


class Protocol(StrEnum):
    """How the registry says a meter is reached (SPEC §3). The spool and the stores keep `.value`
    and no SQL constraint lists them, so a value added here needs no migration."""

    MODBUS_TCP = "modbus_tcp"
    MODBUS_RTU_TCP = "modbus_rtu_tcp"
    MODBUS_RTU = "modbus_rtu"
    MQTT = "mqtt"
    DLMS = "dlms"
    MBUS = "mbus"
    WMBUS = "wmbus"
    P1 = "p1"
    SML = "sml"


@dataclass(frozen=True, slots=True)
class Meter:
    meter_id: str
    utility: Utility
    protocol: Protocol
    address: str  # "endpoint/unit" for Modbus, the topic for MQTT
    model: str = "generic"
    device_number: str | None = None
    payg: bool = False
    status: MeterStatus = MeterStatus.ACTIVE
    installed_at: datetime | None = None
    consumer_number: str | None = None
    location: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A meter linked to a consumer from `start` to `end` (None: open). The opening and closing
    reads are derived from the readings when the assignment is read (the rule of bills, see
    storage.consumption), so a verification or rejection changes them too."""

    meter_id: str
    consumer_number: str
    start: datetime
    end: datetime | None = None
    #: Deprecated (one release): `opening.value` and `closing.value`.
    opening_read: float | None = None
    closing_read: float | None = None
    opening: Reading | None = None
    closing: Reading | None = None  # None while the assignment is open
    #: No billable read at or before `start`: `opening` is the first one after it.
    opening_after_start: bool = False


@dataclass(frozen=True, slots=True)
class MeterBinding:
    """A configured meter as the driver that serves it sees it: the keys every meter has, and its
    protocol's own (`fields`, an instance of the driver spec's meter-field type)."""

    meter_id: str
    protocol: str  # the configuration's protocol name: which registered driver serves the meter
    #: Its place in [[meters]], so a problem names its key: meters[index].unit.
    index: int
    status: MeterStatus
    payg: bool
    fields: Any
    #: The whole [[meters]] entry (every protocol's keys), for checks across protocols.
    section: Any = None

    @property
    def active(self) -> bool:
        return self.status is MeterStatus.ACTIVE
