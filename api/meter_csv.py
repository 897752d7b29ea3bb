"""The meters CSV of POST /v1/meters/import: the header, each row as a meter or what is wrong
with it, and the report.

Synchronous and self-contained: the route runs it in a worker thread, a chunk of rows at a
time, so that parsing and validating 50,000 rows never holds the event loop that the pollers,
the forwarder and every other request share.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, overload

import pydantic_core
from pydantic import ValidationError

from api.routes.meters import to_meter
from api.schemas.meters import MeterIn
from gateway.errors import InvalidRequest
from gateway.model import Meter
from storage.records import DeviceNumberClash, TakenIdentifiers
from storage.rows import METER_STATUS, PROTOCOL, UTILITY

__all__ = ["COLUMNS", "MAX_ROWS", "MeterCsv", "Meters"]

COLUMNS = ("meter_id", "utility", "protocol", "address", "model", "device_number", "payg", "status",
           "installed_at", "consumer_number", "location", "tags")
MAX_ROWS = 50_000
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
#: Rows of the report written per call of the JSON encoder.
_REPORT_PART = 2000
_COMMAS = "separate columns with commas (,), not semicolons or tabs (in a spreadsheet: save as 'CSV, comma delimited')"


#: A valid row's meter as plain values: (meter_id, utility, protocol, address, model, device_number,
#: payg, status, installed_at, consumer_number, location, tags), enums as their values and the tags
#: as one tuple of keys and values in turn (the collector keeps tracking a tuple that holds a dict,
#: and one that holds tuples until a later collection).
Flat = tuple[str, str, str, str, str, str | None, bool, str, datetime | None, str | None, str | None,
             tuple[str, ...]]


def _flat(m: Meter) -> Flat:
    return (m.meter_id, m.utility.value, m.protocol.value, m.address, m.model, m.device_number, m.payg,
            m.status.value, m.installed_at, m.consumer_number, m.location,
            tuple(kv for pair in m.tags.items() for kv in pair))


def _meter(f: Flat) -> Meter:
    return Meter(f[0], UTILITY[f[1]], PROTOCOL[f[2]], f[3], f[4], f[5], f[6], METER_STATUS[f[7]], f[8], f[9], f[10],
                 dict(zip(f[11][::2], f[11][1::2], strict=True)))


class Meters(Sequence[Meter]):
    """Meters kept as tuples of plain values and made when asked for, a slice at a time.

    The garbage collector stops tracking a tuple of strings, numbers, datetimes and a dict of
    strings; it would walk 50,000 Meter objects on every full collection, holding the GIL (the
    event loop's) while it does. The store asks for a batch at a time (Store.create_meters).
    """

    def __init__(self, rows: list[Flat]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Meter: ...
    @overload
    def __getitem__(self, index: slice) -> list[Meter]: ...
    def __getitem__(self, index: int | slice) -> Meter | list[Meter]:
        if isinstance(index, slice):
            return [_meter(f) for f in self._rows[index]]
        return _meter(self._rows[index])


class MeterCsv:
    """A CSV file of meters, read `read(n)` rows at a time (one caller at a time).

    The header is checked at once (InvalidRequest: what is wrong with it). Every row needs one
    cell per column: fewer cells are an error as more are (an empty cell is nothing between two
    commas); empty lines are skipped. Meter ids and device numbers (per utility) must not repeat
    within the file.

    What it found is kept as ints, strings and tuples of them (see Meters), because a full
    collection of the garbage collector walks every container object alive, holding the GIL.
    """

    def __init__(self, text: str) -> None:
        self._reader = csv.reader(io.StringIO(text, newline=""))
        self._lines: Iterator[list[str]] = iter(self._reader)
        self.header = self._read_header()
        #: Every data row's line number, in file order (the header is line 1).
        self.lines: list[int] = []
        #: The valid rows' meters, the line of each, and what to ask the store about them: their meter
        #: ids and (utility, device number) pairs (each once: a repeat within the file is an error),
        #: as plain strings, which the garbage collector does not track.
        self.meters: list[Flat] = []
        self.meter_lines: list[int] = []
        self.meter_ids: list[str] = []
        self.devices: list[tuple[str, str]] = []
        #: The wrong rows: line -> (the meter id it names, if any; what is wrong).
        self.errors: dict[int, tuple[str | None, str]] = {}
        self._ids: dict[str, int] = {}
        self._devices: dict[tuple[str, str], tuple[int, str]] = {}

    def _read_header(self) -> list[str]:
        try:
            header = [h.strip() for h in next(self._lines, [])]
        except csv.Error as exc:
            msg = f"the CSV file cannot be parsed at line {self._reader.line_num}: {exc}"
            raise InvalidRequest(msg) from None
        if len(header) == 1 and any(sep in header[0] for sep in ";\t"):
            msg = f"CSV header {header[0][:200]!r} is one column: {_COMMAS}"
            raise InvalidRequest(msg)
        unknown = [h for h in header if h not in COLUMNS]
        if not header or "meter_id" not in header or unknown:
            msg = (f"CSV header {','.join(header)[:200]!r}: needs meter_id, utility and protocol; unknown columns: "
                   f"{', '.join(unknown) or 'none'} (known: {', '.join(COLUMNS)})")
            raise InvalidRequest(msg)
        return header

    def read(self, n: int) -> int:
        """Read and judge the next `n` data rows at most; how many (0 at the end). InvalidRequest for
        a file that cannot be parsed or has more than MAX_ROWS rows."""
        done = 0
        try:
            for cells in self._lines:
                if not cells:
                    continue
                if len(self.lines) >= MAX_ROWS:
                    msg = f"the CSV file has more than {MAX_ROWS:,} rows: split it"
                    raise InvalidRequest(msg)
                line = self._reader.line_num
                self.lines.append(line)
                self._row(line, cells)
                done += 1
                if done >= n:
                    break
        except csv.Error as exc:
            msg = f"the CSV file cannot be parsed at line {self._reader.line_num}: {exc}"
            raise InvalidRequest(msg) from None
        return done

    def _row(self, line: int, cells: list[str]) -> None:
        record = dict(zip(self.header, cells, strict=False))
        meter_id = (record.get("meter_id") or "").strip() or None
        if len(cells) != len(self.header):
            self.errors[line] = (meter_id, self._shape_problem(cells))
            return
        try:
            meter = to_meter(MeterIn.model_validate(_fields(record)))
        except ValidationError as exc:
            self.errors[line] = (meter_id, _problem(exc))
            return
        except (ValueError, InvalidRequest) as exc:
            self.errors[line] = (meter_id, str(exc))
            return
        if meter.meter_id in self._ids:
            self.errors[line] = (meter.meter_id, f"meter {meter.meter_id} appears earlier in the file "
                                                 f"(line {self._ids[meter.meter_id]})")
            return
        self._ids[meter.meter_id] = line
        if meter.device_number is not None:
            key = (meter.utility.value, meter.device_number)
            if key in self._devices:
                first, holder = self._devices[key]
                self.errors[line] = (meter.meter_id, (
                    f"device_number {meter.device_number!r} ({meter.utility.value}) is also on line {first} "
                    f"(meter {holder}): device numbers are unique per utility"))
                return
            self._devices[key] = (line, meter.meter_id)
            self.devices.append((meter.utility.value, meter.device_number))
        self.meters.append(_flat(meter))
        self.meter_lines.append(line)
        self.meter_ids.append(meter.meter_id)

    def _shape_problem(self, cells: list[str]) -> str:
        columns = len(self.header)
        if len(cells) > columns:
            return (f"{len(cells)} cells, more than the header's {columns} columns "
                    "(a cell that holds a comma goes in double quotes)")
        hint = f"; {_COMMAS}" if any(";" in c or "\t" in c for c in cells) else ""
        return (f"{len(cells)} cell(s), the header has {columns} columns: give every row one cell per column "
                f"(an empty cell is nothing between two commas){hint}")

    def judge(self, taken: TakenIdentifiers, *, partial: bool) -> tuple[Meters, bytes, bool]:
        """The meters to create (none when a row is wrong and not `partial`), the JSON report (an
        ImportReport), and whether the file is applied. `taken`: what the store holds already."""
        errors = dict(self.errors)
        valid: list[Flat] = []
        for line, f in zip(self.meter_lines, self.meters, strict=True):
            meter_id, utility, device_number = f[0], f[1], f[5]
            holder = None if device_number is None else taken.devices.get((utility, device_number))
            if meter_id in taken.meter_ids:
                errors[line] = (meter_id, f"meter {meter_id} already exists (change it with PATCH "
                                          f"/v1/meters/{meter_id})")
            elif holder is not None and device_number is not None:
                errors[line] = (meter_id, str(DeviceNumberClash(None, UTILITY[utility], device_number, holder)))
            else:
                valid.append(f)
        applied = not errors or partial
        by_line = dict(zip(self.meter_lines, self.meter_ids, strict=True))
        report = [{"row": line, "meter_id": errors[line][0], "ok": False, "added": False, "error": errors[line][1]}
                  if line in errors else
                  {"row": line, "meter_id": by_line[line], "ok": True, "added": applied, "error": None}
                  for line in self.lines]
        head = pydantic_core.to_json({"imported": len(valid) if applied else 0, "failed": len(errors),
                                      "applied": applied})
        # The rows a few thousand at a time: one call holds the GIL (pydantic_core does not let it go)
        # for as long as it writes, and the event loop needs it every few milliseconds.
        rows = b",".join(pydantic_core.to_json(report[i:i + _REPORT_PART])[1:-1]
                         for i in range(0, len(report), _REPORT_PART))
        return Meters(valid if applied else []), head[:-1] + b',"rows":[' + rows + b"]}", applied


def _fields(record: dict[str, str]) -> dict[str, Any]:
    """A CSV record as MeterIn's fields: empty cells left out, booleans and tags parsed."""
    out: dict[str, Any] = {}
    for name, cell in record.items():
        value = cell.strip()
        if not value:
            continue
        if name == "payg":
            if value.lower() not in _BOOLS:
                msg = f"payg: {value!r} is not true or false"
                raise ValueError(msg)
            out[name] = _BOOLS[value.lower()]
        elif name == "tags":
            tags = {}
            for pair in value.split(";"):
                key, sep, val = pair.partition("=")
                if not sep or not key.strip():
                    msg = f"tags: {pair!r} is not key=value (pairs separated by ';')"
                    raise ValueError(msg)
                tags[key.strip()] = val.strip()
            out[name] = tags
        else:
            out[name] = value
    return out


def _problem(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())
