"""What the configuration means to the stages: each meter's facts, as its driver's spec states them,
turned into the registry's rows, VEE's settings, the normaliser's maps and the PAYG checker's terms.

Nothing here asks which protocol a meter speaks: a meter has a register map or not, a poll
interval or not, balance terms or not. The registry comes in as an argument (default: this build's).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from drivers.base import DriverSpec, MeterFacts
from drivers.registry import DRIVERS
from gateway.config.schema import GatewayConfig
from gateway.config.sections import bindings
from gateway.model import Channel, Meter
from gateway.model.payg import BalanceTerms
from gateway.model.profiles import DeviceProfile
from gateway.model.units import conversion_factor
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.payload import PayloadFormat
from gateway.normalise.plausibility import CHANNEL_LIMITS, Bounds
from gateway.validate.payg import PaygChecker, PaygLimits
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator

Registry = Mapping[str, DriverSpec]


def meter_facts(config: GatewayConfig, profiles: Mapping[str, DeviceProfile] | None = None,
                drivers: Registry = DRIVERS) -> dict[str, MeterFacts]:
    """Every configured meter's facts (inactive ones too), by meter id, in file order."""
    known = profiles or {}
    return {b.meter_id: drivers[b.protocol].facts(b, config.section(b.protocol), known) for b in bindings(config)}


def meters_from_config(config: GatewayConfig, drivers: Registry = DRIVERS) -> list[Meter]:
    """The configured meters as registry rows."""
    facts = meter_facts(config, drivers=drivers)
    out = []
    for m in config.meters:
        f = facts[m.meter_id]
        out.append(Meter(meter_id=m.meter_id, utility=m.utility, protocol=f.protocol, address=f.address,
                         model=f.model, device_number=m.device_number, payg=m.payg or f.balance is not None,
                         status=m.status, consumer_number=m.consumer_number, location=m.location, tags=dict(m.tags)))
    return out


def config_meters(config: GatewayConfig, drivers: Registry = DRIVERS) -> list[tuple[Meter, frozenset[str]]]:
    """The configured meters, each with the names of the fields its file sets (for Store.sync_meters,
    which keeps what the API changed in the fields the file leaves out)."""
    return [(meter, frozenset(section.model_fields_set))
            for meter, section in zip(meters_from_config(config, drivers), config.meters, strict=True)]


def build_validator(config: GatewayConfig, profiles: Mapping[str, DeviceProfile],
                    facts: Mapping[str, MeterFacts] | None = None, drivers: Registry = DRIVERS) -> Validator:
    """VEE for the configured meters: register moduli, poll intervals, utilities, [vee] thresholds."""
    facts = meter_facts(config, profiles, drivers) if facts is None else facts
    mapped = {m: f.profile for m, f in facts.items() if f.profile is not None}
    moduli = {(m, r.channel): r.modulus * conversion_factor(r.unit, r.channel)
              for m, profile in mapped.items() for r in profile.registers if r.modulus}
    # A meter whose profile measures export is bidirectional: its power may read negative.
    bidirectional = {m for m, profile in mapped.items()
                     if any(r.channel is Channel.ENERGY_EXPORT for r in profile.registers)}
    vee = config.vee
    return Validator(moduli, intervals={m: f.interval for m, f in facts.items() if f.interval is not None},
                     utilities={m.meter_id: m.utility for m in config.meters},
                     thresholds=ThresholdTable.from_config(vee.thresholds_doc()), bidirectional=bidirectional,
                     window=vee.spike_window, estimate=vee.estimate, estimate_min_interval=vee.estimate_min_interval)


def payload_formats(config: GatewayConfig, drivers: Registry = DRIVERS) -> list[tuple[str, PayloadFormat]]:
    """(topic template, payload format) of every topic the drivers' meters push balances on."""
    return [(p.template, PayloadFormat(p.format, dict(p.mapping), p.timestamp, p.max_bytes,  # type: ignore[arg-type]
                                       p.max_future, p.value_maps, p.scales))
            for protocol, spec in drivers.items() for p in spec.payloads(config.section(protocol))]


def build_normaliser(config: GatewayConfig, facts: Mapping[str, MeterFacts], drivers: Registry = DRIVERS
                     ) -> Normaliser:
    """Register maps and object maps of the meters that have one, PAYG terms of those that report
    balances, the payload formats of the topics they push on."""
    profiles = {m: f.profile for m, f in facts.items() if f.profile is not None}
    payg = {m: PaygOptions(f.balance.currency, f.balance.low_credit_threshold, f.balance.currency_decimals)
            for m, f in facts.items() if f.balance is not None}
    objects = {m.meter_id: (f.objects, drivers[m.protocol].source)
               for m in config.meters if (f := facts[m.meter_id]).objects is not None}
    return Normaliser(profiles, payg, payload_formats=payload_formats(config, drivers), objects=objects,
                      bounds=bounds(config))


def bounds(config: GatewayConfig) -> Bounds:
    """The plausibility bounds of [plausibility] and the meters' installed_at."""
    p = config.plausibility
    return Bounds(money_max=p.money_max, money_max_by_currency=dict(p.money_max_by_currency),
                  extra_decimals=p.extra_decimals, currencies=frozenset(p.currencies) if p.currencies else None,
                  ts_floor=p.ts_floor, installed={m.meter_id: m.installed_at for m in config.meters if m.installed_at},
                  max_ahead=timedelta(seconds=p.max_ahead), channels={**CHANNEL_LIMITS, **p.channels})


def payg_checker(config: GatewayConfig, drivers: Registry = DRIVERS) -> PaygChecker:
    """The PAYG event checker with each meter's low-credit threshold and drain limit."""
    limits = {m: _limits(f.balance) for m, f in meter_facts(config, drivers=drivers).items() if f.balance is not None}
    default = next((t for p, spec in drivers.items() if (t := spec.balance_default(config.section(p))) is not None),
                   BalanceTerms())
    return PaygChecker(limits, _limits(default))


def _limits(terms: BalanceTerms) -> PaygLimits:
    return PaygLimits(low_credit_threshold=terms.low_credit_threshold, max_drain_per_hour=terms.max_drain_per_hour)


def balance_meters(facts: Mapping[str, MeterFacts]) -> list[str]:
    """The meters that report PAYG balances."""
    return [m for m, f in facts.items() if f.balance is not None]


__all__ = ["Registry", "balance_meters", "bounds", "build_normaliser", "build_validator", "config_meters", "meter_facts",
           "meters_from_config", "payg_checker", "payload_formats"]
