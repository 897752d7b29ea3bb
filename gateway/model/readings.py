"""Readings: the canonical measurement record (SPEC §3)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntFlag, StrEnum

from gateway.model.slotinit import slot_init


class Channel(StrEnum):
    """Canonical channels; each has exactly one canonical unit (see UNITS)."""

    ENERGY_IMPORT = "energy_import"
    ENERGY_EXPORT = "energy_export"
    POWER = "power"
    VOLTAGE_L1 = "voltage_l1"
    VOLTAGE_L2 = "voltage_l2"
    VOLTAGE_L3 = "voltage_l3"
    CURRENT_L1 = "current_l1"
    CURRENT_L2 = "current_l2"
    CURRENT_L3 = "current_l3"
    FREQUENCY = "frequency"
    POWER_FACTOR = "power_factor"
    VOLUME = "volume"
    FLOW = "flow"
    HEAT_ENERGY = "heat_energy"
    TEMPERATURE_FLOW = "temperature_flow"
    TEMPERATURE_RETURN = "temperature_return"
    # Time-of-use registers (DLMS 1-0:1.8.1..4, P1's tariff 1 and 2): each a cumulative of its own.
    ENERGY_IMPORT_T1 = "energy_import_t1"
    ENERGY_IMPORT_T2 = "energy_import_t2"
    ENERGY_IMPORT_T3 = "energy_import_t3"
    ENERGY_IMPORT_T4 = "energy_import_t4"
    ENERGY_EXPORT_T1 = "energy_export_t1"
    ENERGY_EXPORT_T2 = "energy_export_t2"
    ENERGY_EXPORT_T3 = "energy_export_t3"
    ENERGY_EXPORT_T4 = "energy_export_t4"


UNITS: dict[Channel, str] = {
    Channel.ENERGY_IMPORT: "kWh",
    Channel.ENERGY_EXPORT: "kWh",
    Channel.POWER: "kW",
    Channel.VOLTAGE_L1: "V",
    Channel.VOLTAGE_L2: "V",
    Channel.VOLTAGE_L3: "V",
    Channel.CURRENT_L1: "A",
    Channel.CURRENT_L2: "A",
    Channel.CURRENT_L3: "A",
    Channel.FREQUENCY: "Hz",
    Channel.POWER_FACTOR: "",
    Channel.VOLUME: "m3",
    Channel.FLOW: "m3/h",
    Channel.HEAT_ENERGY: "kWh",
    Channel.TEMPERATURE_FLOW: "°C",
    Channel.TEMPERATURE_RETURN: "°C",
    **{Channel(f"energy_{d}_t{n}"): "kWh" for d in ("import", "export") for n in range(1, 5)},
}

#: The time-of-use registers, by direction: the tariffs of energy_import, then of energy_export.
TOU_CHANNELS: dict[Channel, tuple[Channel, ...]] = {
    total: tuple(Channel(f"{total.value}_t{n}") for n in range(1, 5))
    for total in (Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT)
}

CUMULATIVE_CHANNELS = frozenset(
    {Channel.ENERGY_IMPORT, Channel.ENERGY_EXPORT, Channel.VOLUME, Channel.HEAT_ENERGY,
     *TOU_CHANNELS[Channel.ENERGY_IMPORT], *TOU_CHANNELS[Channel.ENERGY_EXPORT]}
)


class Kind(StrEnum):
    CUMULATIVE = "cumulative"
    INSTANTANEOUS = "instantaneous"


class Status(StrEnum):
    VALID = "valid"
    SUSPECT = "suspect"
    REJECTED = "rejected"
    ESTIMATED = "estimated"
    VERIFIED = "verified"


class Source(StrEnum):
    """Where a reading came from. New values go last: the columnar frame codes sources by position."""

    MODBUS = "modbus"
    MQTT = "mqtt"
    ESTIMATE = "estimate"
    MANUAL = "manual"
    DLMS = "dlms"
    MBUS = "mbus"
    WMBUS = "wmbus"
    P1 = "p1"
    SML = "sml"


class Quality(IntFlag):
    """VEE quality flags; the integer value is stored, so never renumber a flag."""

    NONE = 0
    REGRESSION = 1 << 0
    ROLLOVER = 1 << 1
    SPIKE = 1 << 2
    FLATLINE = 1 << 3
    ZERO_CONSUMPTION = 1 << 4
    GAP = 1 << 5
    FUTURE_TS = 1 << 6
    STALE_TS = 1 << 7
    CLOCK_SKEW = 1 << 8
    OUT_OF_RANGE = 1 << 9
    DUPLICATE_CONFLICT = 1 << 10
    TAMPER = 1 << 11
    ESTIMATED = 1 << 12
    #: Sum check (issue 24): the interval consumption over a window differs from the register's advance.
    SUM_CHECK = 1 << 13
    #: TOU sum check: the time-of-use registers' advances do not add up to the total's advance.
    TOU_SUM_CHECK = 1 << 14
    #: The register advanced while the meter's relay was known to be open, or the meter is inactive.
    USAGE_WHILE_DISCONNECTED = 1 << 15
    #: The meter reports its disconnect relay open in a status register (a device flag, like TAMPER).
    RELAY_OPEN = 1 << 16
    #: Device-reported in a load profile's status byte (DLMS backfill): the interval saw a power
    #: failure, or the meter's clock was set during it. Warnings: the reading stays valid.
    POWER_FAIL = 1 << 17
    CLOCK_ADJUSTED = 1 << 18

    def names(self) -> list[str]:
        """Flag names in bit order, e.g. ['regression', 'gap']."""
        return list(flag_names(int(self)))


@functools.cache
def flag_names(bits: int) -> tuple[str, ...]:
    """Quality(bits).names() as a tuple, cached: walking the enum costs microseconds and
    consumption, counters and API pages ask per reading; there are a handful of combinations."""
    return tuple(f.name.lower() for f in Quality if f.value and bits & f.value == f.value and f.name)


@slot_init
@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one channel of one meter at one measurement time (UTC)."""

    meter_id: str
    channel: Channel
    ts: datetime
    value: float
    kind: Kind
    quality: Quality = Quality.NONE
    status: Status = Status.VALID
    source: Source = Source.MODBUS
    received_at: datetime | None = None
    #: Store-wide ingest sequence; assigned by the store, None before that.
    seq: int | None = None
    #: Free detail kept with a flagged reading (e.g. the rollover modulus used).
    note: str | None = field(default=None, compare=False)
    #: The gateway that stored it (its configured id); set by the store, None before that
    #: and on rows written before stores recorded it.
    gateway_id: str | None = field(default=None, compare=False)

    def with_flags(self, quality: Quality, status: Status) -> Reading:
        return replace(self, quality=quality, status=status)
