"""The `wmbusmeters` payload preset: wmbusmeters' JSON (wireless M-Bus, decoded by wmbusmeters as a
separate process and published over MQTT) -> readings, quality flags and events.

wmbusmeters names its fields by quantity and unit (`total_m3`, `flow_temperature_c`,
`total_energy_consumption_kwh`, ...); those names are the codes of the meter's object map
(gateway/profiles/objects/wmbusmeters.toml), so the same table-driven reader as every coded
protocol's makes the readings, with the decimals wmbusmeters printed (parsed as Decimal). `timestamp`
(when wmbusmeters received the telegram) stamps them. A due-day value (`target_m3`,
`energy_at_set_date_kwh`, ...) becomes a reading of its channel at its own date when the telegram
gives that date (`target_date`, `set_date`), and is left in the payload otherwise.

Status: every word of `status`, `current_status` and any other `*_status` text field (wmbusmeters
writes them upper case, space separated, "OK" or "" when all is well) is an event when it first
appears for the meter (leak, burst, dry, tamper and battery low by name, any other word as an
anomaly): none is dropped. Tamper also flags the telegram's readings TAMPER. A word that goes away
is an info event. Per meter, only the set of active words is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.model import Batch, DeadLetter, Event, EventKind, Quality, Severity, Source
from gateway.model.samples import ObjectValue, RawObjects, RawPayload
from gateway.normalise.objects import ObjectReader

#: Due-day fields: (the field of the same quantity now, the field that dates it).
HISTORIC: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "target_m3": ("total_m3", ("target_datetime", "target_date")),
    "target_kwh": ("total_kwh", ("target_datetime", "target_date")),
    "consumption_at_set_date_m3": ("total_m3", ("set_date",)),
    "energy_at_set_date_kwh": ("total_energy_consumption_kwh", ("set_date",)),
    "volume_at_set_date_m3": ("total_volume_m3", ("set_date",)),
}
#: Status words by what they mean: (event kind, severity, name in the event).
_WORDS: tuple[tuple[str, EventKind, Severity, str], ...] = (
    ("TAMPER", EventKind.TAMPER, Severity.WARNING, "tamper"),
    ("MAGNET", EventKind.TAMPER, Severity.WARNING, "tamper"),
    ("MANIPULATION", EventKind.TAMPER, Severity.WARNING, "tamper"),
    ("BURST", EventKind.ANOMALY, Severity.CRITICAL, "burst"),
    ("LEAK", EventKind.ANOMALY, Severity.WARNING, "leak"),
    ("DRY", EventKind.ANOMALY, Severity.WARNING, "dry"),
    ("POWER_LOW", EventKind.ANOMALY, Severity.WARNING, "battery low"),
    ("BATTERY", EventKind.ANOMALY, Severity.WARNING, "battery low"),
)
_FINE = {"", "OK", "NULL"}
_JSON = json.JSONDecoder(parse_float=Decimal)
PAYLOAD_KEEP = 2048


def classify(word: str) -> tuple[EventKind, Severity, str]:
    for marker, kind, severity, name in _WORDS:
        if marker in word:
            return kind, severity, name
    return EventKind.ANOMALY, Severity.WARNING, word.lower()


def status_words(doc: Mapping[str, Any]) -> frozenset[str]:
    words: set[str] = set()
    for key, value in doc.items():
        if (key == "status" or key.endswith("_status")) and isinstance(value, str):
            words.update(w for w in value.upper().split() if w not in _FINE)
    return frozenset(words)


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class WmbusmetersReader:
    """Per meter: its readers (source wmbus) and its active status words."""

    def __init__(self) -> None:
        self._readers: dict[str, ObjectReader] = {}
        self._active: dict[str, frozenset[str]] = {}
        #: Per meter, the due-day values last read: repeated in every telegram, read once per change.
        self._historic: dict[str, dict[datetime, tuple[ObjectValue, ...]]] = {}

    def read(self, raw: RawPayload, meter_reader: ObjectReader | None) -> Batch:
        batch = Batch()
        if raw.meter_id is None or meter_reader is None:
            batch.deadletters.append(self._dead(raw, "unknown_meter", f"topic {raw.topic}: no wmbusmeters meter "
                                                "configured for it (meters[].wmbus_map)"))
            return batch
        try:
            doc = _JSON.decode(raw.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            batch.deadletters.append(self._dead(raw, "malformed_json", f"topic {raw.topic}: not JSON: {exc}"))
            return batch
        if not isinstance(doc, dict):
            batch.deadletters.append(self._dead(raw, "wrong_type", f"topic {raw.topic}: a JSON object expected, "
                                                f"got {type(doc).__name__}"))
            return batch
        ts = _date(doc.get("timestamp"))
        if ts is None:
            ts = raw.received_at
            if "timestamp" in doc:
                batch.deadletters.append(self._dead(raw, "bad_timestamp", f"topic {raw.topic}: timestamp "
                                                    f"{doc['timestamp']!r:.60} is no ISO 8601 time; received_at used"))
        reader = self._readers.get(raw.meter_id)
        if reader is None or reader.map is not meter_reader.map:
            reader = self._readers[raw.meter_id] = ObjectReader(meter_reader.map, Source.WMBUS)
        now: list[ObjectValue] = []
        earlier: dict[datetime, list[ObjectValue]] = {}
        for key, value in doc.items():
            number = Decimal(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if key in HISTORIC:
                code, date_keys = HISTORIC[key]
                at = next((d for k in date_keys if (d := _date(doc.get(k))) is not None), None)
                if at is not None and number is not None:
                    earlier.setdefault(at, []).append((code, number, None))
            elif reader.map.get(key) is not None:
                now.append((key, number, None))
        text = raw.payload[:PAYLOAD_KEEP]
        samples = [RawObjects(raw.meter_id, ts, raw.received_at, tuple(now), text)]
        seen = self._historic.setdefault(raw.meter_id, {})
        for at, vals in earlier.items():
            if seen.get(at) != tuple(vals):
                seen[at] = tuple(vals)
                samples.append(RawObjects(raw.meter_id, at, raw.received_at, tuple(vals), text))
        if len(seen) > 16:  # a meter's due dates over years: keep the recent ones
            for old in sorted(seen)[:-16]:
                del seen[old]
        words = status_words(doc)
        tamper = any(classify(w)[0] is EventKind.TAMPER for w in words)
        for sample in samples:
            got = reader.read(sample)
            if tamper:
                got.readings = [replace(r, quality=r.quality | Quality.TAMPER) for r in got.readings]
            batch.readings += got.readings
            batch.deadletters += got.deadletters
        self._events(raw.meter_id, ts, words, doc, batch)
        return batch

    def _events(self, meter_id: str, ts: datetime, words: frozenset[str], doc: Mapping[str, Any], batch: Batch) -> None:
        before = self._active.get(meter_id, frozenset())
        self._active[meter_id] = words
        for word in sorted(words - before):
            kind, severity, name = classify(word)
            how_long = doc.get(f"time_{name}")
            more = f" ({how_long})" if isinstance(how_long, str) and how_long else ""
            batch.events.append(Event(ts, meter_id, kind, severity, f"wmbusmeters status {word}: {name}{more}"))
        for word in sorted(before - words):
            batch.events.append(Event(ts, meter_id, EventKind.ANOMALY, Severity.INFO,
                                      f"wmbusmeters status {word} cleared: {classify(word)[2]}"))

    @staticmethod
    def _dead(raw: RawPayload, reason: str, detail: str) -> DeadLetter:
        return DeadLetter(ts=raw.received_at, source=Source.WMBUS.value, where=raw.topic, reason=reason, detail=detail,
                          payload=raw.payload[:PAYLOAD_KEEP].decode("utf-8", errors="replace"), meter_id=raw.meter_id)


__all__ = ["HISTORIC", "WmbusmetersReader", "classify", "status_words"]
