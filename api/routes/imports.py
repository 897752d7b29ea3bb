"""CSV bulk import of meters, with a per-row report (the format: api/meter_csv.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.auth import RequireScope
from api.deps import NowDep, StoreDep, check_text_params
from api.guard import BodyLimit, BodyTooLarge
from api.meter_csv import COLUMNS, MAX_ROWS, MeterCsv
from api.schemas.common import ErrorOut
from api.schemas.meters import ImportReport
from gateway.errors import InvalidRequest
from storage.keys import Scope

router = APIRouter(prefix="/v1/meters", tags=["meters"], dependencies=[Depends(check_text_params)])

#: Rows parsed and validated per hand-off to the worker thread (10-25 ms of work), and the pause
#: after each (an import of 40,000 rows takes about 0.4 s longer, and /healthz answers in half the time).
CHUNK_ROWS = 500
CHUNK_PAUSE = 0.005
MAX_BYTES = 10_000_000
#: The body may hold a little more than the file: a multipart body's boundaries and part headers.
MAX_BODY = MAX_BYTES + 64 * 1024
_EXAMPLE = ("meter_id,utility,protocol,address,model,device_number,payg,consumer_number,location,tags\n"
            "M-0101,electricity,modbus_tcp,10.0.0.7:502/11,sdm630,SDM-0101,false,C-5101,1 Harbour Road,feeder=F7\n"
            "W-0102,water,mqtt,meters/W-0102,generic,,false,C-5102,2 Harbour Road,\n")
_BODY = {
    "required": True,
    "description": f"A CSV file with a header row; columns: {', '.join(COLUMNS)} (meter_id, utility and protocol "
                   "required; tags as key=value;key=value). Columns separated by commas; every row has one cell per "
                   "column of the header (an empty cell is nothing between two commas); empty lines are skipped. As "
                   f"the body (text/csv) or a multipart field `file`; at most {MAX_BYTES:,} bytes and {MAX_ROWS:,} "
                   "rows.",
    "content": {
        "text/csv": {"schema": {"type": "string"}, "example": _EXAMPLE},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    },
}


async def _read(request: Request) -> bytes | bytearray:
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
    return raw


@router.post("/import", response_model=ImportReport, status_code=201,
             dependencies=[Depends(RequireScope(Scope.WRITE)), Depends(BodyLimit(MAX_BODY))],
             openapi_extra={"requestBody": _BODY},
             responses={409: {"model": ErrorOut, "description": "Another request created one of the meters, or took "
                                                                "one of their device numbers, meanwhile; nothing was "
                                                                "imported"},
                        413: {"model": ErrorOut, "description": f"The file is larger than {MAX_BYTES:,} bytes"},
                        422: {"model": ImportReport | ErrorOut,
                              "description": "Some rows are wrong (the report says which; nothing was imported), or "
                                             "the parameters are invalid"}})
async def import_meters(
    request: Request, store: StoreDep, now: NowDep,
    partial: bool = Query(False, description="Import the valid rows even if others are wrong", examples=[False]),
) -> Response:
    """Register meters from a CSV file; the report says, per row, whether it was added or why not."""
    raw = await _read(request)
    # Decoding, parsing, validating and the report run in a worker thread, a chunk of rows at a
    # time: 50,000 rows are seconds of Python, and the pollers share this event loop.
    table = await asyncio.to_thread(_open, raw)
    while await asyncio.to_thread(table.read, CHUNK_ROWS):  # noqa: ASYNC110 - a pause, not a wait for an event
        # The worker holds the GIL while it parses; a few milliseconds without it between chunks let
        # the loop catch up (its polls and requests otherwise wait up to 5 ms per switch).
        await asyncio.sleep(CHUNK_PAUSE)
    taken = await store.taken_identifiers(table.meter_ids, table.devices)
    valid, body, applied = await asyncio.to_thread(table.judge, taken, partial=partial)
    if valid:
        await store.create_meters(valid, at=now)
    return Response(body, status_code=201 if applied else 422, media_type="application/json")


def _open(raw: bytes | bytearray) -> MeterCsv:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"the CSV file is not UTF-8 text (byte {exc.start}: {bytes(raw[exc.start:exc.start + 1])!r})"
        raise InvalidRequest(msg) from None
    return MeterCsv(text)
