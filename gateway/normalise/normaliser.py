"""Stage 2 entry: raw driver samples -> canonical readings, balance updates or dead letters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from drivers.samples import PollFailure, RawPayload, RawRegisters
from gateway.errors import DecodeError, PayloadError
from gateway.model import Batch, DeadLetter, Reading, Source
from gateway.model.profiles import DeviceProfile
from gateway.normalise.payload import parse_balance
from gateway.normalise.registers import decode, words_for
from gateway.normalise.units import conversion_factor

PAYLOAD_KEEP = 2048  # bytes of a bad payload kept in the dead-letter store


@dataclass(frozen=True, slots=True)
class PaygOptions:
    currency: str = "XXX"
    low_credit_threshold: Decimal = Decimal("5")


class Normaliser:
    """Pure translation; holds only the configuration it needs (profiles per meter)."""

    def __init__(self, profiles: Mapping[str, DeviceProfile], payg_meters: Mapping[str, PaygOptions]) -> None:
        self._profiles = profiles
        self._payg = payg_meters

    def registers(self, raw: RawRegisters) -> Batch:
        batch = Batch()
        profile = self._profiles.get(raw.meter_id)
        if profile is None:
            batch.deadletters.append(self._dead(raw.received_at, "modbus", raw.meter_id, "unknown_meter",
                                                "no profile configured for this meter", ""))
            return batch
        blocks = {(b.function, b.address): b.words for b in raw.blocks}
        for spec in profile.registers:
            words = words_for(spec, blocks)
            where = f"{spec.function.value} {spec.address:#06x}"
            if words is None:
                batch.deadletters.append(self._dead(raw.received_at, "modbus", raw.meter_id, "missing_register",
                                                    f"{spec.channel.value}: register {where} was not read", ""))
                continue
            try:
                value = decode(words, spec) * conversion_factor(spec.unit, spec.channel)
            except (ValueError, OverflowError) as exc:
                batch.deadletters.append(self._dead(raw.received_at, "modbus", raw.meter_id, "decode",
                                                    f"{spec.channel.value} at {where}: {exc}", str(list(words))))
                continue
            if not math.isfinite(value):
                # Not a number cannot be stored as a reading; it is kept as data here.
                batch.deadletters.append(self._dead(raw.received_at, "modbus", raw.meter_id, "non_finite",
                                                    f"{spec.channel.value} at {where} decoded to {value}",
                                                    str(list(words))))
                continue
            batch.readings.append(Reading(
                meter_id=raw.meter_id, channel=spec.channel, ts=raw.ts, value=value, kind=spec.kind,
                source=Source.MODBUS, received_at=raw.received_at,
            ))
        return batch

    def payload(self, raw: RawPayload) -> Batch:
        batch = Batch()
        text = raw.payload[:PAYLOAD_KEEP].decode("utf-8", errors="replace")
        if raw.meter_id is None or raw.meter_id not in self._payg:
            batch.deadletters.append(self._dead(raw.received_at, "mqtt", raw.meter_id, "unknown_meter",
                                                f"topic {raw.topic}: no PAYG meter configured for it", text,
                                                where=raw.topic))
            return batch
        opts = self._payg[raw.meter_id]
        try:
            update = parse_balance(raw.payload, raw.topic, raw.meter_id, received_at=raw.received_at,
                                   low_credit_threshold=opts.low_credit_threshold, currency=opts.currency)
        except PayloadError as exc:
            batch.deadletters.append(self._dead(raw.received_at, "mqtt", raw.meter_id, exc.reason, str(exc), text,
                                                where=raw.topic))
            return batch
        batch.balances.append(update)
        return batch

    def failure(self, failure: PollFailure) -> Batch:
        """Failures that carry data (undecodable words) are dead letters; timeouts are not data."""
        batch = Batch()
        err = failure.error
        if isinstance(err, DecodeError):
            batch.deadletters.append(self._dead(failure.ts, "modbus", failure.meter_id, "decode", str(err),
                                                str(list(err.words)), where=err.where))
        return batch

    @staticmethod
    def _dead(ts: datetime, source: str, meter_id: str | None, reason: str, detail: str, payload: str,
              where: str = "") -> DeadLetter:
        return DeadLetter(ts=ts, source=source, where=where or (meter_id or ""), reason=reason, detail=detail,
                          payload=payload, meter_id=meter_id)


__all__ = ["Normaliser", "PaygOptions"]
