"""Issue 27 over HTTP, on both stores: periods that have not begun (422) or not ended (complete,
as_of), bill and consumption agreeing, the read objects of bills and assignments and move reads
after a rejection, consumption buckets in local time with their offset, installation dates, and
the deprecated fields in the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.model import Batch, Channel, Kind, Reading
from storage.base import Store
from tests.api.helpers import WIDE, all_pages, as_reading, fails, ok

H = timedelta(hours=1)
DAY = timedelta(days=1)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def meter_body(meter_id: str, installed_at: datetime, consumer_number: str | None = None) -> dict[str, Any]:
    return {"meter_id": meter_id, "utility": "electricity", "protocol": "modbus_tcp", "address": "10.0.0.9:502/1",
            "installed_at": iso(installed_at), **({"consumer_number": consumer_number} if consumer_number else {})}


def energy(meter_id: str, t: datetime, value: float) -> Reading:
    return Reading(meter_id, Channel.ENERGY_IMPORT, t, value, Kind.CUMULATIVE)


async def test_periods_that_have_not_begun_or_are_reversed_are_422_naming_the_parameter(
        api: httpx.AsyncClient) -> None:  # fmt: skip
    # The finding: a bill for 2027 was a clean zero (opening = closing = the latest read).
    future = {"from": "2099-01-01T00:00:00Z", "to": "2099-02-01T00:00:00Z"}
    body = await fails(api.get("/v1/consumers/C-1/billing", params=future), 422, "invalid_request",
                       "from (2099-01-01T00:00:00+00:00) is in the future")
    assert body["where"] == "query.from"
    for params in (future, {"from": future["from"]}):
        body = await fails(api.get("/v1/meters/M-0001/consumption", params=params), 422, "invalid_request",
                           "is in the future")
        assert body["where"] == "query.from"
    body = await fails(api.get("/v1/meters/M-0001/consumption", params={"from": "2026-02-01T00:00:00Z",
                                                                        "to": "2026-01-01T00:00:00Z"}),
                       422, "invalid_request", "must be before to")
    assert body["where"] == "query.to"


async def test_a_period_that_has_not_ended_is_billed_up_to_now_and_agrees_with_consumption(
        api: httpx.AsyncClient, store: Store) -> None:  # fmt: skip
    now = datetime.now(UTC)
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0) - 3 * DAY
    await ok(api.post("/v1/meters", json=meter_body("M-9001", day0, "C-9001")), 201)
    reads = [energy("M-9001", day0 + timedelta(seconds=2), 100.0)]
    reads += [energy("M-9001", day0 + h * H, 100.0 + h * 0.25) for h in range(1, 24 * 3 + 1)]
    await store.write(Batch(readings=reads))
    period = {"from": iso(day0), "to": iso(day0 + 7 * DAY)}  # ends in four days

    bill = await ok(api.get("/v1/consumers/C-9001/billing", params=period))
    days = await ok(api.get("/v1/meters/M-9001/consumption", params={**period, "bucket": "day"}))

    [part] = bill["meters"]
    assert (bill["start"], bill["end"]) == (bill["from"], bill["to"]) == (period["from"], period["to"])
    assert not bill["complete"] and not part["complete"] and not days["complete"]
    assert bill["as_of"] == part["as_of"] == days["as_of"] == iso(reads[-1].ts)
    # The first read came 2 s after the start: it opens the bill and the first bucket.
    assert part["opening"]["ts"] == iso(reads[0].ts) and part["opening"]["flags"] == ["opening_after_start"]
    assert part["flags"] == ["opening_after_start"] and part["flag_counts"] == {"opening_after_start": 1}
    assert days["buckets"][0]["opening_after_start"] and days["buckets"][0]["first_read"]["ts"] == part["opening"]["ts"]
    assert abs(part["consumption"] - 18.0) < 1e-9
    assert abs(sum(b["value"] or 0 for b in days["buckets"]) - part["consumption"]) < 1e-9
    later = [b for b in days["buckets"] if datetime.fromisoformat(b["start"]) > now]
    assert len(later) == 3 and all(b["value"] is None and not b["complete"] for b in later)
    [assignment] = (await ok(api.get("/v1/meters/M-9001/assignments")))["items"]
    assert assignment["opening"] == part["opening"] and assignment["opening_read"] == 100.0


async def test_move_reads_are_read_objects_that_follow_a_rejection(api: httpx.AsyncClient) -> None:
    reads = await all_pages(api, "/v1/meters/M-0002/readings", channel="energy_import", limit=5000, **WIDE)
    valid = [i for i, r in enumerate(reads) if r["status"] == "valid"]
    mid = valid[len(valid) // 2]
    start = datetime.fromisoformat(reads[mid]["ts"]) + timedelta(microseconds=1)
    await ok(api.post("/v1/meters/M-0002/assignments", json={"consumer_number": "C-900", "start": iso(start)}), 201)

    old, new = (await ok(api.get("/v1/meters/M-0002/assignments")))["items"]
    assert old["closing"] == new["opening"] and as_reading(old["closing"]) == reads[mid]
    assert (old["closing"]["flags"], old["closing"]["estimate_method"]) == ([], None)
    assert old["closing_read"] == new["opening_read"] == reads[mid]["value"]  # deprecated, kept one release

    # The finding: after the move-out read was rejected, the assignment still showed it.
    await ok(api.post("/v1/readings/verify", json={"meter_id": "M-0002", "channel": "energy_import",
                                                   "ts": reads[mid]["ts"], "status": "rejected",
                                                   "note": "photo shows a lower register"}))
    old, new = (await ok(api.get("/v1/meters/M-0002/assignments")))["items"]
    before = reads[valid[len(valid) // 2 - 1]]
    assert old["closing"] == new["opening"] and as_reading(old["closing"]) == before
    assert (old["closing"]["ts"], old["closing"]["status"], old["closing"]["source"]) == (
        before["ts"], "valid", before["source"])
    out_bill = await ok(api.get("/v1/consumers/C-2/billing", params={"from": old["start"], "to": old["end"]}))
    assert out_bill["meters"][0]["closing"] == old["closing"]


async def test_consumption_buckets_carry_local_time_with_their_offset(api: httpx.AsyncClient, store: Store) -> None:
    # Europe/Berlin falls back on 2024-10-27: 02:00-03:00 local comes twice (+02:00, then +01:00).
    first = datetime(2024, 10, 26, 21, tzinfo=UTC)
    await store.write(Batch(readings=[energy("M-0001", first + h * H, 10.0 + h) for h in range(9)]))
    period = {"from": "2024-10-26T22:00:00Z", "to": "2024-10-27T03:00:00Z", "bucket": "hour"}

    local = await ok(api.get("/v1/meters/M-0001/consumption", params={**period, "tz": "Europe/Berlin"}))
    utc = await ok(api.get("/v1/meters/M-0001/consumption", params=period))

    assert [b["start"][11:] for b in local["buckets"]] == ["00:00:00+02:00", "01:00:00+02:00", "02:00:00+02:00",
                                                           "02:00:00+01:00", "03:00:00+01:00"]
    assert (local["start"], local["end"]) == ("2024-10-27T00:00:00+02:00", "2024-10-27T04:00:00+01:00")
    assert [b["start"] for b in utc["buckets"]][:2] == ["2024-10-26T22:00:00Z", "2024-10-26T23:00:00Z"]
    assert [b["value"] for b in local["buckets"]] == [b["value"] for b in utc["buckets"]] == [1.0] * 5
    assert local["complete"] and local["as_of"] == "2024-10-27T03:00:00Z"


async def test_installation_dates_hold(api: httpx.AsyncClient, store: Store) -> None:
    installed = datetime.now(UTC).replace(microsecond=0) - 10 * DAY
    await ok(api.post("/v1/meters", json=meter_body("M-9002", installed)), 201)

    # The finding: an assignment starting before installed_at was accepted (201).
    await fails(api.post("/v1/meters/M-9002/assignments", json={"consumer_number": "C-9002",
                                                                "start": iso(installed - H)}),
                409, "conflict", "before the meter's installed_at")
    await store.write(Batch(readings=[energy("M-9002", installed + H, 1.0), energy("M-9002", installed + 2 * H, 2.0)]))
    # ... and moving installed_at past readings was accepted silently.
    await fails(api.patch("/v1/meters/M-9002", json={"installed_at": iso(installed + 3 * H)}), 409, "conflict",
                "installed_at", "would orphan 2 reading(s)")
    assert (await ok(api.get("/v1/meters/M-9002")))["installed_at"] == iso(installed)
    moved = await ok(api.patch("/v1/meters/M-9002", json={"installed_at": iso(installed - DAY)}))
    assert moved["installed_at"] == iso(installed - DAY)
    await fails(api.post("/v1/meters", json=meter_body("M-9003", datetime.now(UTC) + DAY, "C-9003")), 409,
                "conflict", "installed_at", "is in the future")


async def test_the_openapi_document_marks_the_old_fields_deprecated(api: httpx.AsyncClient) -> None:
    schemas = (await ok(api.get("/openapi.json")))["components"]["schemas"]
    assignment, bill = schemas["AssignmentOut"]["properties"], schemas["BillingOut"]["properties"]
    assert all(assignment[f].get("deprecated") is True for f in ("opening_read", "closing_read"))
    assert all(bill[f].get("deprecated") is True for f in ("from", "to"))
    assert not any(bill[f].get("deprecated") for f in ("start", "end"))
    assert "opening" in assignment and "flag_counts" in schemas["BillingMeterOut"]["properties"]
