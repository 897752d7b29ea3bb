"""Thresholds of the VEE checks, per utility and channel, with documented defaults.

The defaults are the proposals of the domain notes (§3.3), named after the rules utility
engineers know from their meter-data management systems (Oracle Utilities MDM, Itron IEE /
MetrixIDR, IESO MDP_STD_0002, SAP IS-U). A configuration overrides them in four layers, each
more specific than the one before::

    built-in default (utility, channel)
      < [vee]                                   fleet-wide
      < [vee.utilities.<utility>]               e.g. water
      < [vee.channels.<channel>]                e.g. frequency
      < [vee.utilities.<utility>.channels.<channel>]

A key set at one layer applies below it unless a more specific layer sets it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gateway.model.meters import Utility
from gateway.model.readings import CUMULATIVE_CHANNELS, Channel

VOLTAGES = frozenset({Channel.VOLTAGE_L1, Channel.VOLTAGE_L2, Channel.VOLTAGE_L3})
CURRENTS = frozenset({Channel.CURRENT_L1, Channel.CURRENT_L2, Channel.CURRENT_L3})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every tunable of the checks for one (utility, channel). Durations in hours or seconds as named."""

    #: Register resolution: a cumulative drop smaller than this is noise, not a regression
    #: (Oracle "Negative Consumption Check", Itron "Disallow Negative").
    resolution: float = 0.001
    #: Interval Spike Check: robust z of the interval's consumption rate against the meter's
    #: last `spike_window` intervals, |rate - median| / (1.4826 * MAD) > spike_k ...
    spike_k: float = 6.0
    #: ... and the rate above spike_peak_factor x the window's third-highest rate (Oracle's
    #: highest-vs-third-highest tolerance; daily peaks are not spikes) ...
    spike_peak_factor: float = 1.5
    #: ... and above this absolute rate (canonical unit per hour), so tiny loads never spike.
    spike_min_rate: float = 0.5
    #: History a meter needs before its spikes are judged: this many intervals with consumption,
    #: over at least spike_min_days (a full daily cycle, or the first evening peak looks like a spike).
    spike_min_samples: int = 48
    spike_min_days: float = 1.0
    #: Repeated Value (Itron MetrixIDR): a cumulative register that moved before and is now
    #: unchanged for longer than max(flatline_min_hours, flatline_factor x its usual flat run).
    flatline_min_hours: float = 24.0
    flatline_factor: float = 1.0
    #: Zero Consumption Check (Oracle, SAP IS-U): no consumption over this many hours.
    #: None switches it off (e.g. an export register that is zero by nature).
    zero_consumption_hours: float | None = 24.0
    #: Gap Check (Itron), "intervals found vs expected" (IESO): a reading more than
    #: (1 + gap_tolerance) intervals after the previous one has missing intervals before it.
    gap_tolerance: float = 0.5
    #: Time tolerance (IESO): device time vs the gateway's receive time.
    future_seconds: float = 300.0
    stale_hours: float = 168.0
    skew_seconds: float = 60.0
    #: High/Low limits of a value (Itron "Demand High/Low Limit"): outside them it is physically
    #: impossible for the channel and rejected. None = no limit. Voltage limits default to
    #: nominal_voltage x (1 -/+ voltage_band).
    low: float | None = None
    high: float | None = None
    nominal_voltage: float = 230.0
    voltage_band: float = 0.20
    #: Estimation: linear interpolation for gaps up to this long (Itron IEE example 3 h,
    #: Claridge & Chen 1-6 h), like-day (gateway.validate.estimate) beyond; nothing past the maximum
    #: (Oracle "Prolonged Estimation Check": a person looks at it instead).
    estimate_linear_hours: float = 3.0
    estimate_max_hours: float = 168.0
    #: inspection_recommended: this many regression episodes within inspection_days, or any tamper.
    inspection_regressions: int = 3
    inspection_days: float = 30.0
    #: Sum check and TOU sum check (Oracle D2-SUM-CHK, Connexo MeterAdvanceValidator): the parts'
    #: advance may differ from the register's by max(sum_tolerance x |advance|, sum_resolutions x
    #: resolution) (domain.md §3.3: max(1 %, 2 x the register's resolution)).
    sum_tolerance: float = 0.01
    sum_resolutions: float = 2.0
    #: Usage while disconnected (CIM 3.6.2): an advance of more than this many register steps since
    #: the first read with the relay open (or the meter inactive). One step is the read in flight.
    disconnected_resolutions: float = 1.0
    #: Leak (issue 18 item 7): a volume register that advanced at every read for this long raises
    #: one `leak_suspected` event per run; None: off. A step between two reads longer than
    #: `leak_max_step_hours` breaks the run (flow between them cannot be told from a burst).
    leak_hours: float | None = 24.0
    leak_max_step_hours: float = 3.0


THRESHOLD_FIELDS: frozenset[str] = frozenset(f.name for f in fields(Thresholds))


def builtin(utility: Utility, channel: Channel) -> Thresholds:
    """The documented default thresholds of one utility's channel (before any configuration)."""
    t = Thresholds()
    if utility in (Utility.WATER, Utility.GAS):
        # Water and gas meters stand still overnight and over weekends, and their use comes in
        # bursts (a bath, a shower and a washing machine in one interval): a spike must stand
        # out further from the window's third-highest interval than an electricity load's.
        t = replace(t, zero_consumption_hours=72.0, spike_min_rate=0.05, spike_peak_factor=4.0, spike_min_samples=24)
    elif utility is Utility.HEAT:
        t = replace(t, zero_consumption_hours=72.0)
    if channel is Channel.ENERGY_EXPORT:
        t = replace(t, zero_consumption_hours=None)  # most meters never export
    if channel in CUMULATIVE_CHANNELS:
        t = replace(t, low=0.0)
    elif channel is Channel.FREQUENCY:
        t = replace(t, low=45.0, high=65.0)
    elif channel is Channel.POWER_FACTOR:
        t = replace(t, low=-1.0, high=1.0)
    elif channel in CURRENTS or channel in (Channel.POWER, Channel.FLOW):
        t = replace(t, low=0.0)  # negative only where the meter is bidirectional (see Validator)
    return t


def _checked(layer: str, values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - THRESHOLD_FIELDS
    if unknown:
        msg = f"vee {layer}: unknown threshold(s) {sorted(unknown)} (known: {sorted(THRESHOLD_FIELDS)})"
        raise ValueError(msg)
    return dict(values)


@dataclass(frozen=True, slots=True)
class ThresholdTable:
    """The built-in defaults plus the configured overrides; `resolve` gives one channel's thresholds."""

    fleet: Mapping[str, Any] = field(default_factory=dict)
    utilities: Mapping[Utility, Mapping[str, Any]] = field(default_factory=dict)
    channels: Mapping[Channel, Mapping[str, Any]] = field(default_factory=dict)
    utility_channels: Mapping[tuple[Utility, Channel], Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _checked("[vee]", self.fleet)
        for u, values in self.utilities.items():
            _checked(f"utilities.{u}", values)
        for c, values in self.channels.items():
            _checked(f"channels.{c}", values)
        for (u, c), values in self.utility_channels.items():
            _checked(f"utilities.{u}.channels.{c}", values)

    @classmethod
    def from_config(cls, doc: Mapping[str, Any]) -> ThresholdTable:
        """From the `[vee]` section as plain data: threshold keys at the top, `utilities` and
        `channels` tables below (None values are "not set")."""

        def set_only(d: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k in THRESHOLD_FIELDS and v is not None}

        utilities: dict[Utility, dict[str, Any]] = {}
        utility_channels: dict[tuple[Utility, Channel], dict[str, Any]] = {}
        for u, section in (doc.get("utilities") or {}).items():
            utilities[Utility(u)] = set_only(section)
            for c, sub in (section.get("channels") or {}).items():
                utility_channels[(Utility(u), Channel(c))] = set_only(sub)
        channels = {Channel(c): set_only(sub) for c, sub in (doc.get("channels") or {}).items()}
        return cls(set_only(doc), utilities, channels, utility_channels)

    def resolve(self, utility: Utility, channel: Channel) -> Thresholds:
        t = builtin(utility, channel)
        explicit_limits = False
        for layer in (self.fleet, self.utilities.get(utility, {}), self.channels.get(channel, {}),
                      self.utility_channels.get((utility, channel), {})):
            if layer:
                t = replace(t, **layer)
                explicit_limits |= "low" in layer or "high" in layer
        if channel in VOLTAGES and not explicit_limits:
            t = replace(t, low=t.nominal_voltage * (1 - t.voltage_band), high=t.nominal_voltage * (1 + t.voltage_band))
        return t


def limit(value: float | None, default: float) -> float:
    """A threshold as a number for numpy: None becomes the given no-limit default (±inf)."""
    return default if value is None else float(value)


__all__ = ["THRESHOLD_FIELDS", "ThresholdTable", "Thresholds", "builtin", "limit"]
