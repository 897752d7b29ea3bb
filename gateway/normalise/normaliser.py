"""Stage 2 entry: raw driver samples -> canonical readings, balance updates or dead letters."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.errors import DecodeError, PayloadError
from gateway.model import Batch, Channel, DeadLetter, Event, EventKind, Quality, Reading, Severity, Source
from gateway.model.payg import BalanceUpdate
from gateway.model.profiles import DeviceFlag, DeviceProfile, ObjectMap, RegisterSpec
from gateway.model.samples import PollFailure, RawObjects, RawPayload, RawRegisters, Sample
from gateway.model.shown import shown_value
from gateway.model.units import conversion_factor
from gateway.normalise.objects import reader_table
from gateway.normalise.payload import PayloadFormat
from gateway.normalise.plausibility import CHANNEL_LIMITS, Bounds, Refused, outside_range
from gateway.normalise.registers import (
    NUMPY_TYPE,
    Layout,
    NotAvailable,
    decode,
    decode_number,
    flag_raised,
    place,
    words_for,
)
from gateway.normalise.wmbusmeters import WmbusmetersReader

PAYLOAD_KEEP = 2048  # bytes of a bad payload kept in the dead-letter store
#: What each device-reported condition marks on the readings of the poll that reported it.
_FLAG_QUALITY: dict[DeviceFlag, Quality] = {DeviceFlag.TAMPER: Quality.TAMPER, DeviceFlag.RELAY_OPEN: Quality.RELAY_OPEN}


@dataclass(frozen=True, slots=True)
class PaygOptions:
    currency: str = "XXX"
    low_credit_threshold: Decimal = Decimal("5")
    #: Decimals allowed per currency beyond ISO 4217's minor unit ([mqtt] currency_decimals).
    currency_decimals: Mapping[str, int] = field(default_factory=dict)


class Normaliser:
    """Translation; holds the configuration it needs (profiles per meter) and, per meter,
    only whether it reported tamper last time (so the event is raised once per episode)."""

    def __init__(self, profiles: Mapping[str, DeviceProfile], payg_meters: Mapping[str, PaygOptions], *,
                 payload_formats: Sequence[tuple[str, PayloadFormat]] = (),
                 objects: Mapping[str, tuple[ObjectMap, Source]] | None = None, bounds: Bounds | None = None) -> None:
        self._profiles = profiles
        #: Plausibility ([plausibility]): what no meter can have meant is a dead letter, before the spool.
        self.bounds = bounds or Bounds()
        self._payg = payg_meters
        #: Per meter that reports coded values (RawObjects): its object map and the source of its readings.
        self._objects = reader_table(dict(objects or {}))
        #: How the payloads of each topic template are written, by template (the driver stamps the
        #: template a message fit on its RawPayload); the first one is the default.
        self._formats: dict[str | None, PayloadFormat] = {}
        for template, fmt in payload_formats:
            self._formats.setdefault(template, fmt)
        self._default = next(iter(self._formats.values()), None) or PayloadFormat()
        self._tampered: set[str] = set()
        self._wmbus = WmbusmetersReader()
        #: What each kind of sample gives: a table, not an isinstance chain.
        self._by_kind: dict[type, Callable[[Any], Batch]] = {
            RawRegisters: self.registers, RawPayload: self.payload, RawObjects: self.objects, PollFailure: self.failure,
            DeadLetter: lambda d: Batch(deadletters=[d]), Event: lambda e: Batch(events=[e]),
            BalanceUpdate: self.balance,
        }
        self._placements: dict[tuple[int, Layout], tuple[DeviceProfile, list[tuple[RegisterSpec, int, int, float]]]] = {}

    @property
    def profiles(self) -> Mapping[str, DeviceProfile]:
        """The device profile of each Modbus meter, by meter id."""
        return self._profiles

    def sample(self, item: Sample) -> Batch:
        """Any driver sample -> the readings, balances, events or dead letters it gives."""
        return self._by_kind[type(item)](item)

    def registers(self, raw: RawRegisters) -> Batch:
        """Decode one poll. A status bit the profile maps to a flag (e.g. tamper) marks every
        reading of the poll; a TAMPER event is raised when a meter starts reporting it.

        The pipeline decodes its polls many at a time with `frame.FrameDecoder`, which gives
        the same results; this one-poll form is for previews (diagnostics' "poll now")."""
        batch = Batch()
        profile = self._profiles.get(raw.meter_id)
        early = self.too_early(raw)
        if early is not None:
            batch.deadletters.append(early)
            return batch
        if profile is None:
            batch.deadletters.append(poll_dead_letter(raw, "unknown_meter", "no profile configured for this meter"))
            return batch
        quality = Quality.NONE
        if profile.flags:
            quality = self._device_flags(raw, profile, {(b.function, b.address): b.words for b in raw.blocks}, batch)
        for spec, index, offset, factor in self._placed(profile, raw):
            if index < 0:
                where = f"{spec.function.value} {spec.address:#06x}"
                batch.deadletters.append(poll_dead_letter(raw, "missing_register",
                                                          f"{spec.channel.value}: register {where} was not read"))
                continue
            value = register_value(raw, spec, raw.blocks[index].words[offset : offset + spec.words], factor,
                                   self.bounds.channels)
            if isinstance(value, DeadLetter):
                batch.deadletters.append(value)
                continue
            batch.readings.append(Reading(
                meter_id=raw.meter_id, channel=spec.channel, ts=raw.ts, value=value, kind=spec.kind,
                quality=quality, source=RawRegisters.SOURCE, received_at=raw.received_at,
            ))
        return batch

    def too_early(self, raw: RawRegisters) -> DeadLetter | None:
        """The dead letter of a poll made before the meter's installation or the ts floor (a gateway
        clock that reset), or None: none of its registers is data. A poll is stamped with the
        gateway's clock, so it is never ahead ([plausibility] max_ahead is for meters' clocks)."""
        bounds = self.bounds
        installed = bounds.installed.get(raw.meter_id)
        if raw.ts >= bounds.ts_floor and (installed is None or raw.ts >= installed):
            return None  # the usual case, on the pipeline's path for every poll: no more calls than this
        refused = bounds.stamped(raw.meter_id, "poll: ts", raw.ts)
        return None if refused is None else poll_dead_letter(raw, refused.reason, str(refused))

    def _placed(self, profile: DeviceProfile, raw: RawRegisters) -> list[tuple[RegisterSpec, int, int, float]]:
        """Where each register sits in this poll's blocks, and its unit factor; computed once per
        (profile, block layout), because a meter's polls read the same blocks every time."""
        layout = tuple((b.function, b.address, len(b.words)) for b in raw.blocks)
        key = (id(profile), layout)
        cached = self._placements.get(key)
        if cached is None or cached[0] is not profile:
            placed = [(spec, *place(spec, layout), conversion_factor(spec.unit, spec.channel))
                      for spec in profile.registers]
            cached = self._placements[key] = (profile, placed)
        return cached[1]

    def _device_flags(self, raw: RawRegisters, profile: DeviceProfile,
                      blocks: Mapping[tuple[int, int], tuple[int, ...]], batch: Batch) -> Quality:
        """Quality flags the device reports in its status bits for this poll."""
        if not profile.flags:
            return Quality.NONE
        quality = Quality.NONE
        for flag in profile.flags:
            words = words_for(flag, blocks)
            if words is None:
                where = f"{flag.function.value} {flag.address:#06x}"
                batch.deadletters.append(poll_dead_letter(raw, "missing_register",
                                                          f"{flag.flag.value} flag: register {where} was not read"))
            elif flag_raised(words[0], flag):
                quality |= _FLAG_QUALITY[flag.flag]
        # One event when a meter starts reporting tamper, not one per poll while it lasts.
        tampered = bool(quality & Quality.TAMPER)
        if tampered and raw.meter_id not in self._tampered:
            batch.events.append(Event(raw.ts, raw.meter_id, EventKind.TAMPER, Severity.WARNING,
                                      "the meter reports tamper in its status register"))
        if tampered:
            self._tampered.add(raw.meter_id)
        else:
            self._tampered.discard(raw.meter_id)
        return quality

    def balance(self, update: BalanceUpdate) -> Batch:
        """A balance a driver read from the meter's own credit objects: bounded as a payload's is."""
        try:
            self.bounds.balance(update, configured=update.currency)
        except Refused as exc:
            return Batch(deadletters=[self._dead(update.received_at or update.ts, "dlms", update.meter_id, exc.reason,
                                                 str(exc), f"balance {update.balance} {update.currency}")])
        return Batch(balances=[update])

    def payload(self, raw: RawPayload) -> Batch:
        """One MQTT message -> a balance update, or a dead letter (topic, truncated payload, reason)."""
        fmt = self._formats.get(raw.template, self._default)
        if fmt.format == "wmbusmeters":  # wireless M-Bus through wmbusmeters: readings, not a balance
            return self._wmbusmeters(raw, fmt)
        batch = Batch()
        if raw.meter_id is None or raw.meter_id not in self._payg:
            batch.deadletters.append(self._dead(raw.received_at, RawPayload.SOURCE.value, raw.meter_id, "unknown_meter",
                                                f"topic {raw.topic}: no PAYG meter configured for it",
                                                payload_preview(raw.payload), where=raw.topic))
            return batch
        opts = self._payg[raw.meter_id]
        try:
            update = fmt.parse(raw.payload, raw.topic, raw.meter_id, received_at=raw.received_at,
                               low_credit_threshold=opts.low_credit_threshold, currency=opts.currency,
                               max_ahead=self.bounds.max_ahead)
            self.bounds.balance(update, configured=opts.currency, max_future=fmt.max_future,
                                decimals=opts.currency_decimals)
        except (PayloadError, Refused) as exc:
            detail = str(exc) if isinstance(exc, PayloadError) else f"topic {raw.topic}: {exc}"
            batch.deadletters.append(self._dead(raw.received_at, RawPayload.SOURCE.value, raw.meter_id, exc.reason, detail,
                                                payload_preview(raw.payload), where=raw.topic))
            return batch
        batch.balances.append(update)
        return batch

    def _wmbusmeters(self, raw: RawPayload, fmt: PayloadFormat) -> Batch:
        if len(raw.payload) > fmt.max_bytes:
            return Batch(deadletters=[self._dead(raw.received_at, Source.WMBUS.value, raw.meter_id, "oversized",
                                                 f"topic {raw.topic}: {len(raw.payload)} bytes, over {fmt.max_bytes}",
                                                 payload_preview(raw.payload), where=raw.topic)])
        batch = self._wmbus.read(raw, self._objects.get(raw.meter_id) if raw.meter_id else None)
        if batch.readings:
            batch.readings, dead = self.bounds.readings(batch.readings)
            batch.deadletters += dead
        return batch

    def objects(self, raw: RawObjects) -> Batch:
        """One telegram of coded values -> readings through the meter's object map (normalise/objects.py)."""
        reader = self._objects.get(raw.meter_id)
        if reader is None:
            batch = Batch()
            batch.deadletters.append(self._dead(raw.received_at, "gateway", raw.meter_id, "unknown_meter",
                                                "no object map configured for this meter",
                                                payload_preview(raw.raw), where=raw.meter_id))
            return batch
        batch = reader.read(raw)
        if batch.readings:
            batch.readings, dead = self.bounds.readings(batch.readings)
            batch.deadletters += dead
        return batch

    def failure(self, failure: PollFailure) -> Batch:
        """Failures that carry data (undecodable words) are dead letters; timeouts are not data."""
        batch = Batch()
        err = failure.error
        if isinstance(err, DecodeError):
            batch.deadletters.append(self._dead(failure.ts, PollFailure.SOURCE.value, failure.meter_id, "decode", str(err),
                                                str(list(err.words)), where=err.where))
        return batch

    @staticmethod
    def _dead(ts: datetime, source: str, meter_id: str | None, reason: str, detail: str, payload: str,
              where: str = "") -> DeadLetter:
        return DeadLetter(ts=ts, source=source, where=where or (meter_id or ""), reason=reason, detail=detail,
                          payload=payload, meter_id=meter_id)


def poll_dead_letter(raw: RawRegisters, reason: str, detail: str, payload: str = "") -> DeadLetter:
    """A dead letter of one Modbus poll, stamped with its received_at (diagnostics match them by it)."""
    return DeadLetter(ts=raw.received_at, source=RawRegisters.SOURCE.value, where=raw.meter_id, reason=reason, detail=detail,
                      payload=payload, meter_id=raw.meter_id)


def register_value(raw: RawRegisters, spec: RegisterSpec, words: Sequence[int], factor: float,
                   limits: Mapping[Channel, tuple[float, float]] = CHANNEL_LIMITS) -> float | DeadLetter:
    """One register of one poll in the channel's canonical unit, or the dead letter that keeps
    its words when they hold no storable number or one outside the channel's physical range
    (`limits`, [plausibility.channels]). `FrameDecoder` asks this for the values it finds
    unusable, so both decoders word their dead letters alike."""
    try:
        # decode() checks the count and the marker; the value is the one the meter shows.
        decode(words, spec)
        value = shown_value(decode_number(words, spec), dtype=NUMPY_TYPE[spec.type], scale=spec.scale,
                            offset=spec.offset, factor=factor)
    except NotAvailable as exc:
        reason, detail = "not_available", f"{_at(spec)}: {exc}"
    except (ValueError, OverflowError) as exc:
        reason, detail = "decode", f"{_at(spec)}: {exc}"
    else:
        low, high = limits.get(spec.channel, (-math.inf, math.inf))
        if low <= value <= high:
            return value
        if math.isfinite(value):
            reason, detail = "implausible_value", f"{_at(spec)}: {outside_range(spec.channel, value, low, high)}"
        else:
            # Not a number cannot be stored as a reading; it is kept as data here.
            reason, detail = "non_finite", f"{_at(spec)} decoded to {value}"
    return poll_dead_letter(raw, reason, detail, str(list(words)))


def _at(spec: RegisterSpec) -> str:
    return f"{spec.channel.value} at {spec.function.value} {spec.address:#06x}"


def payload_preview(payload: bytes) -> str:
    """What a dead letter keeps of a payload: the first PAYLOAD_KEEP bytes, as text."""
    text = payload[:PAYLOAD_KEEP].decode("utf-8", errors="replace")
    return text if len(payload) <= PAYLOAD_KEEP else f"{text}... ({len(payload)} bytes)"


__all__ = ["PAYLOAD_KEEP", "Normaliser", "PaygOptions", "payload_preview", "poll_dead_letter", "register_value"]
