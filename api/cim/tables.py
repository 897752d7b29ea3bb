"""The CIM code tables: channel -> ReadingType, status/flag -> ReadingQualityType, event kind ->
EndDeviceEventType. They are data (api/cim/tables/*.toml, each naming its source) because utilities'
head-ends disagree on details; a deployment overrides rows with files of the same name in its own folder."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from gateway.model import Channel
from gateway.model.events import EventKind
from gateway.model.meters import Utility
from gateway.model.readings import Quality, Status

FILES = ("reading_types.toml", "reading_qualities.toml", "event_types.toml")
#: The consumption buckets a MeterReadings document can carry as IntervalBlocks.
INTERVALS = ("hour", "day", "month")
_READING_TYPE = re.compile(r"\d+(\.\d+){17}")
_QUALITY = re.compile(r"\d+\.\d+\.\d+")
_EVENT = re.compile(r"\d+\.\d+\.\d+")
#: Device events the table may name before a driver reports them (DLMS and M-Bus event logs).
DEVICE_EVENTS = frozenset({"power_down", "power_up", "cover_opened", "battery_low"})
E = TypeVar("E", Channel, Status, Quality, EventKind)


class TableError(ValueError):
    """A code table file is wrong; the message names the file and the row."""


@dataclass(frozen=True, slots=True)
class CimTables:
    register_types: Mapping[Channel, str]
    interval_types: Mapping[str, Mapping[Channel, str]]  # by bucket
    status_qualities: Mapping[Status, str]
    flag_qualities: Mapping[Quality, str]
    device_types: Mapping[str, int]  # utility value or "prepayment"
    event_types: Mapping[EventKind, tuple[str, str]]  # (device, "domain.subdomain.event")

    def qualities(self, status: Status, quality: int) -> list[str]:
        """The ReadingQualityType codes of a reading: its status's, then each flag's, each once."""
        codes: list[str] = []
        own = self.status_qualities.get(status)
        if own:
            codes.append(own)
        for flag, code in self.flag_qualities.items():
            if quality & flag and code not in codes:
                codes.append(code)
        return codes

    def event_type(self, kind: EventKind, utility: Utility | None) -> str | None:
        """The 4-part code of an event of `kind` on a meter of `utility` (None: not known)."""
        row = self.event_types.get(kind)
        if row is None:
            return None
        device, rest = row
        key = device if device != "meter" else (utility.value if utility else "")
        return f"{self.device_types.get(key, 0)}.{rest}"


def load_tables(folder: Path | None = None) -> CimTables:
    """The shipped tables, with each row a file of the same name in `folder` gives replacing its own."""
    docs: dict[str, dict[str, Any]] = {}
    shipped = resources.files("api.cim") / "tables"
    for name in FILES:
        docs[name] = _parse(shipped.joinpath(name).read_text(encoding="utf-8"), f"shipped {name}")
        if folder is not None and (folder / name).is_file():
            _merge(docs[name], _parse((folder / name).read_text(encoding="utf-8"), str(folder / name)))
    return _build(docs)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source}: not valid TOML: {exc}"
        raise TableError(msg) from None


def _merge(into: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _codes(doc: Mapping[str, Any], table: str, pattern: re.Pattern[str], file: str) -> dict[str, str]:
    rows = doc.get(table, {})
    if not isinstance(rows, Mapping):
        msg = f"{file}: [{table}] must be a table"
        raise TableError(msg)
    out: dict[str, str] = {}
    for key, code in rows.items():
        if not isinstance(code, str) or not pattern.fullmatch(code):
            msg = f"{file}: [{table}] {key} = {code!r} is not a code of the form {pattern.pattern}"
            raise TableError(msg)
        out[key] = code
    return out


def _enum_keys(rows: Mapping[str, Any], enum: type[E], where: str) -> dict[E, Any]:
    out: dict[E, Any] = {}
    for key, value in rows.items():
        try:
            member = enum[key.upper()] if enum is Quality else enum(key)  # type: ignore[arg-type]
        except (KeyError, ValueError):
            msg = f"{where}: {key!r} is not a known {enum.__name__.lower()}"
            raise TableError(msg) from None
        out[member] = value
    return out


def _build(docs: Mapping[str, dict[str, Any]]) -> CimTables:
    types, quals, events = (docs[n] for n in FILES)
    register = _enum_keys(_codes(types, "register", _READING_TYPE, FILES[0]), Channel, f"{FILES[0]} [register]")
    interval_doc = types.get("interval", {})
    intervals = {bucket: _enum_keys(_codes(interval_doc, bucket, _READING_TYPE, FILES[0]), Channel,
                                    f"{FILES[0]} [interval.{bucket}]") for bucket in INTERVALS}
    status = _enum_keys(_codes(quals, "status", _QUALITY, FILES[1]), Status, f"{FILES[1]} [status]")
    flags = _enum_keys(_codes(quals, "flags", _QUALITY, FILES[1]), Quality, f"{FILES[1]} [flags]")
    devices = events.get("device_types", {})
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in devices.values()):
        msg = f"{FILES[2]}: [device_types] values must be integers"
        raise TableError(msg)
    rows: dict[str, tuple[str, str]] = {}
    for key, row in events.get("events", {}).items():
        if (not isinstance(row, list) or len(row) != 2 or row[0] not in {"meter", "prepayment"}
                or not isinstance(row[1], str) or not _EVENT.fullmatch(row[1])):
            msg = f"{FILES[2]}: [events] {key} = {row!r} must be [\"meter\" | \"prepayment\", \"domain.subdomain.event\"]"
            raise TableError(msg)
        rows[key] = (row[0], row[1])
    known_events = {k: v for k, v in rows.items() if k not in DEVICE_EVENTS}
    return CimTables(register_types=register, interval_types=intervals, status_qualities=status,
                     flag_qualities=flags, device_types=dict(devices),
                     event_types=_enum_keys(known_events, EventKind, f"{FILES[2]} [events]"))
