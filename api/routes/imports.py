"""CSV bulk import of meters, with a per-row report."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.auth import RequireScope
from api.deps import NowDep, StoreDep, check_text_params
from api.guard import BodyLimit, BodyTooLarge
from api.routes.meters import to_meter
from api.schemas.common import ErrorOut
from api.schemas.meters import ImportReport, ImportRow, MeterIn
from gateway.errors import InvalidRequest
from gateway.model import Meter
from storage.keys import Scope

router = APIRouter(prefix="/v1/meters", tags=["meters"], dependencies=[Depends(check_text_params)])

COLUMNS = ("meter_id", "utility", "protocol", "address", "model", "device_number", "payg", "status",
           "installed_at", "consumer_number", "location", "tags")
MAX_BYTES = 10_000_000
#: The body may hold a little more than the file: a multipart body's boundaries and part headers.
MAX_BODY = MAX_BYTES + 64 * 1024
MAX_ROWS = 50_000
_EXAMPLE = ("meter_id,utility,protocol,address,model,device_number,payg,consumer_number,location,tags\n"
            "M-0101,electricity,modbus_tcp,10.0.0.7:502/11,sdm630,SDM-0101,false,C-5101,1 Harbour Road,feeder=F7\n"
            "W-0102,water,mqtt,meters/W-0102,generic,,false,C-5102,2 Harbour Road,\n")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_BODY = {
    "required": True,
    "description": f"A CSV file with a header row; columns: {', '.join(COLUMNS)} (meter_id, utility and protocol "
                   "required; tags as key=value;key=value). As the body (text/csv) or a multipart field `file`; at most "
                   f"{MAX_BYTES:,} bytes and {MAX_ROWS:,} rows.",
    "content": {
        "text/csv": {"schema": {"type": "string"}, "example": _EXAMPLE},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    },
}


async def _read(request: Request) -> str:
    # The body arrives in pieces and is kept only up to MAX_BYTES; RequestGuard has already
    # refused a longer declared length, and stops a longer stream at MAX_BODY.
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: bytes | bytearray
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=5) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidRequest("multipart body: put the CSV file in a field named 'file'")
            raw = await upload.read(MAX_BYTES + 1)
    elif ctype in ("text/csv", "text/plain", "application/csv"):
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BYTES:
                break
    else:
        msg = f"content type {ctype or '(none)'!r}: send the CSV as text/csv, or multipart/form-data with field 'file'"
        raise InvalidRequest(msg)
    if len(raw) > MAX_BYTES:
        raise BodyTooLarge(MAX_BYTES, "the CSV import (split the file)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"the CSV file is not UTF-8 text (byte {exc.start}: {bytes(raw[exc.start:exc.start + 1])!r})"
        raise InvalidRequest(msg) from None


def _fields(record: dict[str, str]) -> dict[str, Any]:
    """A CSV record as MeterIn's fields: empty cells left out, booleans and tags parsed."""
    out: dict[str, Any] = {}
    for name, cell in record.items():
        value = (cell or "").strip()
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


@router.post("/import", response_model=ImportReport, status_code=201,
             dependencies=[Depends(RequireScope(Scope.WRITE)), Depends(BodyLimit(MAX_BODY))],
             openapi_extra={"requestBody": _BODY},
             responses={413: {"model": ErrorOut, "description": f"The file is larger than {MAX_BYTES:,} bytes"},
                        422: {"model": ImportReport | ErrorOut,
                              "description": "Some rows are wrong (the report says which; nothing was imported), or "
                                             "the parameters are invalid"}})
async def import_meters(
    request: Request, store: StoreDep, now: NowDep,
    partial: bool = Query(False, description="Import the valid rows even if others are wrong", examples=[False]),
) -> JSONResponse:
    """Register meters from a CSV file; the report says, per row, whether it was added or why not."""
    text = await _read(request)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in reader.fieldnames or []]
        unknown = [h for h in header if h not in COLUMNS]
        if not header or "meter_id" not in header or unknown:
            msg = (f"CSV header {','.join(header)[:200]!r}: needs meter_id, utility and protocol; unknown columns: "
                   f"{', '.join(unknown) or 'none'} (known: {', '.join(COLUMNS)})")
            raise InvalidRequest(msg)
        reader.fieldnames = header
        records: list[tuple[int, dict[str, str]]] = []
        for record in reader:
            if len(records) >= MAX_ROWS:
                msg = f"the CSV file has more than {MAX_ROWS:,} rows: split it"
                raise InvalidRequest(msg)
            records.append((reader.line_num, record))
    except csv.Error as exc:
        msg = f"the CSV file cannot be parsed at line {reader.line_num}: {exc}"
        raise InvalidRequest(msg) from None

    report: list[ImportRow] = []
    valid: list[Meter] = []
    seen: set[str] = set()
    for line, record in records:
        meter_id = (record.get("meter_id") or "").strip() or None
        if None in record:  # DictReader keeps cells beyond the header under the key None
            report.append(ImportRow(row=line, meter_id=meter_id, ok=False,
                                    error=f"more cells than the header's {len(header)} columns"))
            continue
        try:
            meter = to_meter(MeterIn.model_validate(_fields(record)))
        except ValidationError as exc:
            report.append(ImportRow(row=line, meter_id=meter_id, ok=False, error=_problem(exc)))
            continue
        except (ValueError, InvalidRequest) as exc:
            report.append(ImportRow(row=line, meter_id=meter_id, ok=False, error=str(exc)))
            continue
        if meter.meter_id in seen:
            error = f"meter {meter.meter_id} appears earlier in the file"
        elif await store.get_meter(meter.meter_id) is not None:
            error = f"meter {meter.meter_id} already exists (change it with PATCH /v1/meters/{meter.meter_id})"
        else:
            error = None
        seen.add(meter.meter_id)
        report.append(ImportRow(row=line, meter_id=meter.meter_id, ok=error is None, error=error))
        if error is None:
            valid.append(meter)
    failed = sum(1 for r in report if not r.ok)
    applied = failed == 0 or partial
    if applied and valid:
        await store.create_meters(valid, at=now)
    if applied:
        report = [r.model_copy(update={"added": True}) if r.ok else r for r in report]
    body = ImportReport(imported=len(valid) if applied else 0, failed=failed, applied=applied, rows=report)
    return JSONResponse(status_code=201 if applied else 422, content=body.model_dump(mode="json"))
