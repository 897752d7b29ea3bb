"""Assignments (move-in / move-out), consumer numbers and billing reads over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from tests.api.helpers import WIDE, all_pages, as_reading, fails, ok


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_move_in_closes_the_previous_assignment_with_the_last_valid_read(api: httpx.AsyncClient) -> None:
    reads = await all_pages(api, "/v1/meters/M-0002/readings", channel="energy_import", limit=5000, **WIDE)
    mid = reads[len(reads) // 2]
    start = ts(mid["ts"]) + timedelta(microseconds=1)

    new = await ok(api.post("/v1/meters/M-0002/assignments",
                            json={"consumer_number": "C-900", "start": start.isoformat()}), 201)

    assert (new["consumer_number"], new["opening_read"], new["end"]) == ("C-900", mid["value"], None)
    old, current = (await ok(api.get("/v1/meters/M-0002/assignments")))["items"]
    assert (old["consumer_number"], old["end"], old["closing_read"]) == ("C-2", new["start"], mid["value"])
    assert current == new
    assert (await ok(api.get("/v1/meters/M-0002")))["consumer_number"] == "C-900"

    consumer = await ok(api.get("/v1/consumers/C-900"))
    assert consumer["active"] and [m["meter_id"] for m in consumer["meters"]] == ["M-0002"]
    assert consumer["assignments"] == [new]
    previous = await ok(api.get("/v1/consumers/C-2"))
    assert previous["meters"] == [] and previous["assignments"] == [old]

    # Each consumer is billed for its part: the reads meet at the move-in.
    period = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    out_bill = await ok(api.get("/v1/consumers/C-2/billing", params=period))
    in_bill = await ok(api.get("/v1/consumers/C-900/billing", params=period))
    assert out_bill["meters"][0]["closing"]["value"] == in_bill["meters"][0]["opening"]["value"] == mid["value"]
    assert as_reading(in_bill["meters"][0]["closing"]) == reads[-1]
    assert abs(in_bill["meters"][0]["consumption"] - (reads[-1]["value"] - mid["value"])) < 1e-6
    # C-2 was assigned when the meter was registered. Its opening read is the last read at or
    # before that: usually none, but a first poll is stamped with the interval boundary it
    # belongs to, which can fall a moment before the registration. Without one it is the
    # first read after the start (issue 27 item 6; it was none and so was the consumption).
    before = [r for r in reads if ts(r["ts"]) <= ts(old["start"])]
    opening = out_bill["meters"][0]["opening"]
    first = before[-1] if before else reads[0]
    assert as_reading(opening) == first and opening["flags"] == ([] if before else ["opening_after_start"])
    assert abs(out_bill["meters"][0]["consumption"] - (mid["value"] - first["value"])) < 1e-6


async def test_move_in_refusals(api: httpx.AsyncClient) -> None:
    await fails(api.post("/v1/meters/M-0003/assignments", json={"consumer_number": "C-3",
                                                                "start": "2026-01-01T00:00:00Z"}),
                409, "conflict", "already assigned to consumer C-3")
    await fails(api.post("/v1/meters/M-0003/assignments", json={"consumer_number": "C-9",
                                                                "start": "2001-01-01T00:00:00Z"}),
                409, "conflict", "must be after the start of its current assignment")
    await fails(api.post("/v1/meters/M-0003/assignments", json={"consumer_number": "C-9",
                                                                "start": "2099-01-01T00:00:00Z"}),
                400, "invalid_request", "in the future")
    await fails(api.post("/v1/meters/M-0003/assignments", json={"consumer_number": "C 9",
                                                                "start": "2026-01-01T00:00:00Z"}),
                422, "invalid_request", "body.consumer_number")
    await fails(api.post("/v1/meters/NOPE/assignments", json={"consumer_number": "C-9",
                                                              "start": "2026-01-01T00:00:00Z"}),
                404, "not_found", "NOPE")


async def test_deactivating_a_consumer(api: httpx.AsyncClient) -> None:
    reads = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", limit=5000, **WIDE)

    gone = await ok(api.post("/v1/consumers/C-1/deactivate"))

    assert not gone["active"] and gone["deactivated_at"] is not None and gone["meters"] == []
    [a] = gone["assignments"]
    assert a["end"] is not None and a["closing_read"] == reads[-1]["value"]
    assert (await ok(api.get("/v1/meters/M-0001")))["consumer_number"] is None
    await fails(api.post("/v1/meters/M-0001/assignments", json={"consumer_number": "C-1",
                                                                "start": datetime.now().astimezone().isoformat()}),
                409, "conflict", "deactivated")
    assert (await ok(api.post("/v1/consumers/C-1/deactivate")))["deactivated_at"] == gone["deactivated_at"]
    await fails(api.get("/v1/consumers/C-404"), 404, "not_found", "C-404")
    await fails(api.post("/v1/consumers/C-404/deactivate"), 404, "not_found")


async def test_billing_of_a_period_and_its_flags(api: httpx.AsyncClient) -> None:
    bill = await ok(api.get("/v1/consumers/C-4/billing", params={"from": "2000-01-01T00:00:00Z",
                                                                 "to": "2100-01-01T00:00:00Z"}))
    [part] = bill["meters"]
    assert part["meter_id"] == "M-0004" and part["channel"] == "energy_import" and part["unit"] == "kWh"
    assert part["closing"]["status"] in ("valid", "verified", "estimated")  # suspect reads are never billed from
    assert bill["suspect"] == part["suspect"]
    empty = await ok(api.get("/v1/consumers/C-4/billing", params={"from": "2001-01-01T00:00:00Z",
                                                                  "to": "2001-02-01T00:00:00Z"}))
    assert empty["meters"] == [] and (empty["from"], empty["to"]) == ("2001-01-01T00:00:00Z", "2001-02-01T00:00:00Z")
    # A reversed period is a 422 naming the parameter (issue 27; it was a 400).
    body = await fails(api.get("/v1/consumers/C-4/billing", params={"from": "2001-02-01T00:00:00Z",
                                                                    "to": "2001-01-01T00:00:00Z"}),
                       422, "invalid_request", "must be before")
    assert body["where"] == "query.to"
    await fails(api.get("/v1/consumers/C-4/billing"), 422, "invalid_request", "query.from", "query.to")
