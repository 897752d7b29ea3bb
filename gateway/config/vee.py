"""The `[vee]` section: validation, estimation and editing thresholds (see gateway/validate/thresholds.py).

Example::

    [vee]
    seed_hours = 48              # history read back from the store at start
    spike_k = 6.0                # fleet-wide: every utility and channel

    [vee.utilities.water]
    zero_consumption_hours = 72

    [vee.channels.frequency]     # any utility
    low = 47.0
    high = 52.0

    [vee.utilities.electricity.channels.voltage_l1]
    nominal_voltage = 120.0      # a 120 V service: limits become 96..144 V

Unset keys keep the documented default of the utility and channel.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.model.meters import Utility
from gateway.model.readings import Channel


class VeeThresholds(BaseModel):
    """Threshold overrides; None means "inherit" (from the less specific layer or the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: float | None = Field(default=None, ge=0, description="Register resolution (default 0.001): smaller drops are noise")
    spike_k: float | None = Field(default=None, gt=0, description="Robust z limit of the Interval Spike Check (default 6)")
    spike_peak_factor: float | None = Field(default=None, ge=1, description="x the window's third-highest rate (default 1.5, water/gas 4)")
    spike_min_rate: float | None = Field(default=None, ge=0, description="Absolute floor, unit per hour (default 0.5 kWh/h, 0.05 m3/h)")
    spike_min_samples: int | None = Field(default=None, ge=3, description="Intervals with consumption before spikes are judged (default 48, water/gas 24)")
    spike_min_days: float | None = Field(default=None, ge=0, description="... and at least this many days of them (default 1)")
    flatline_min_hours: float | None = Field(default=None, gt=0, description="Never flatline sooner (default 24)")
    flatline_factor: float | None = Field(default=None, gt=0, description="x the meter's usual flat run (default 1)")
    zero_consumption_hours: float | None = Field(default=None, gt=0, description="Zero Consumption Check period (default 24 electricity, 72 water/gas/heat)")
    gap_tolerance: float | None = Field(default=None, ge=0, description="Fraction of an interval a read may be late before it is a gap (default 0.5)")
    future_seconds: float | None = Field(default=None, ge=0, description="FUTURE_TS beyond this (default 300)")
    stale_hours: float | None = Field(default=None, gt=0, description="STALE_TS beyond this (default 168)")
    skew_seconds: float | None = Field(default=None, ge=0, description="CLOCK_SKEW warning beyond this (default 60)")
    low: float | None = Field(default=None, description="Lowest believable value (canonical unit)")
    high: float | None = Field(default=None, description="Highest believable value (canonical unit)")
    nominal_voltage: float | None = Field(default=None, gt=0, description="Voltage limits default to nominal x (1 -/+ band) (230)")
    voltage_band: float | None = Field(default=None, gt=0, lt=1, description="(default 0.20)")
    estimate_linear_hours: float | None = Field(default=None, ge=0, description="Linear fill up to this gap; like-day beyond (default 3)")
    estimate_max_hours: float | None = Field(default=None, ge=0, description="No estimates beyond this gap (default 168)")
    inspection_regressions: int | None = Field(default=None, ge=1, description="Regression episodes that recommend an inspection (default 3)")
    inspection_days: float | None = Field(default=None, gt=0, description="... within this many days (default 30)")
    sum_tolerance: float | None = Field(default=None, ge=0, lt=1, description="Sum checks: fraction of the register's advance (default 0.01)")
    sum_resolutions: float | None = Field(default=None, ge=0, description="... or this many register resolutions, whichever is larger (default 2)")
    disconnected_resolutions: float | None = Field(default=None, ge=0, description="Usage while disconnected: register steps of advance tolerated (default 1)")
    leak_hours: float | None = Field(default=None, gt=0, description="Leak: hours a volume register advancing at every read raises leak_suspected (default 24)")
    leak_max_step_hours: float | None = Field(default=None, gt=0, description="Leak: a longer step between two reads breaks the run (default 3)")


class VeeUtility(VeeThresholds):
    channels: dict[Channel, VeeThresholds] = Field(default_factory=dict)


class VeeSection(VeeThresholds):
    seed_hours: float = Field(default=48.0, ge=0, description="Stored history replayed into VEE at start (hours)")
    seed_wait: float = Field(default=5.0, ge=0, description="Seconds the drivers wait for that history before polling anyway")
    spike_window: int = Field(default=672, ge=3, le=100_000, description="Intervals in the spike window (672 = 7 days of 15 min)")
    estimate: bool = Field(default=True, description="Fill gaps of interval data with estimates")
    estimate_min_interval: float = Field(default=60.0, ge=0, description="Only meters read this often or less (s) are interval data")
    utilities: dict[Utility, VeeUtility] = Field(default_factory=dict)
    channels: dict[Channel, VeeThresholds] = Field(default_factory=dict)

    def thresholds_doc(self) -> dict[str, Any]:
        """The threshold layers as plain data for `ThresholdTable.from_config`."""
        return self.model_dump(mode="json", exclude_none=True)


__all__ = ["VeeSection", "VeeThresholds", "VeeUtility"]
