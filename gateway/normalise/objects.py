"""RawObjects -> readings, through a meter's ObjectMap (DLMS/COSEM, M-Bus, wM-Bus, P1, SML).

Table-driven: each value's code is looked up in the map, which says the channel, the kind and the
unit when the telegram states none; a unit the telegram states wins (it is what the meter sent).
Codes the map does not list are not readings (equipment ids, tariff indicators, logs) and are
skipped. A value that cannot be read as a number in the channel's unit is a dead letter that keeps
the code, the value and the telegram, so nothing bad stops the rest of the telegram.
"""

from __future__ import annotations

import math
from decimal import Decimal

from gateway.model import Batch, DeadLetter, Reading, Source
from gateway.model.profiles import ObjectMap, ObjectSpec
from gateway.model.samples import RawObjects
from gateway.model.units import conversion_factor

#: Bytes of a telegram a dead letter keeps.
RAW_KEEP = 2048


class ObjectReader:
    """Readings of one meter's telegrams through its map; unit factors are worked out once per
    (code, stated unit)."""

    __slots__ = ("_factors", "map", "source")

    def __init__(self, objects: ObjectMap, source: Source) -> None:
        self.map = objects
        self.source = source
        self._factors: dict[tuple[str, str | None], float | str] = {}  # a factor, or why there is none

    def read(self, raw: RawObjects) -> Batch:
        batch = Batch()
        for code, value, unit in raw.values:
            spec = self.map.get(code)
            if spec is None:
                continue
            factor = self._factor(spec, unit)
            if isinstance(factor, str):
                batch.deadletters.append(self._dead(raw, code, value, "unit", factor))
                continue
            number = _scaled(value, spec.scale, factor)
            if number is None:
                batch.deadletters.append(self._dead(raw, code, value, "decode", f"{code}: {value!r:.60} is no number"))
                continue
            if not math.isfinite(number):
                batch.deadletters.append(self._dead(raw, code, value, "non_finite", f"{code} decoded to {number}"))
                continue
            batch.readings.append(Reading(meter_id=raw.meter_id, channel=spec.channel, ts=raw.ts, value=number,
                                          kind=spec.kind, quality=raw.quality, source=self.source,
                                          received_at=None if raw.recorded else raw.received_at))
        return batch

    def _factor(self, spec: ObjectSpec, unit: str | None) -> float | str:
        key = (spec.code, unit)
        found = self._factors.get(key)
        if found is None:
            try:
                found = conversion_factor(spec.unit if unit is None else unit, spec.channel)
            except ValueError as exc:
                found = f"{spec.code}: {exc}"
            self._factors[key] = found
        return found

    def _dead(self, raw: RawObjects, code: str, value: object, reason: str, detail: str) -> DeadLetter:
        telegram = _telegram(raw.raw[:RAW_KEEP]) if raw.raw else f"{code}={value!r}"
        return DeadLetter(ts=raw.received_at, source=self.source.value, where=f"{raw.meter_id} {code}",
                          reason=reason, detail=detail, payload=telegram, meter_id=raw.meter_id)


def _number(value: Decimal | float | str) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        # A signalling NaN (Decimal("sNaN")) raises ValueError, an int past any float OverflowError.
        return float(value) if isinstance(value, (int, float, Decimal)) else float(value.strip())
    except (AttributeError, ValueError, OverflowError):
        return None


def _telegram(raw: bytes) -> str:
    """A text telegram (P1) as its text; a binary one (a DLMS APDU, an SML file) in hex."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text) else raw.hex()


def _scaled(value: Decimal | float | str, scale: float, factor: float) -> float | None:
    """The value times the map's scale and the unit's factor. A decimal (P1's "000123.456", SML's
    value x 10^scaler) is multiplied exactly, each factor read as its shortest decimal (Wh -> kWh is
    0.001), so 6545766 Wh is 6545.766 kWh, not 6545.766000000001; a float as before."""
    if isinstance(value, (Decimal, int)) and not isinstance(value, bool):
        try:
            exact = Decimal(value) * Decimal(repr(scale)) * Decimal(repr(factor))
            return float(exact)
        except (ArithmeticError, ValueError):  # sNaN, an exponent past any context
            return None
    number = _number(value)
    return None if number is None else number * scale * factor


def reader_table(maps: dict[str, tuple[ObjectMap, Source]]) -> dict[str, ObjectReader]:
    """One reader per meter, sharing nothing but the (immutable) maps."""
    return {meter: ObjectReader(objects, source) for meter, (objects, source) in maps.items()}


__all__ = ["RAW_KEEP", "ObjectReader", "reader_table"]
