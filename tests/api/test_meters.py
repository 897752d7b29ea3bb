"""The meters registry over HTTP: list, filters, search, pages, create, update, deactivate, CSV import."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import WIDE, all_pages, fails, ok

NEW = {"meter_id": "W-0100", "utility": "water", "protocol": "mqtt", "address": "meters/W-0100",
       "device_number": "WM-77", "consumer_number": "C-77", "location": "7 Long Lane",
       "installed_at": "2026-01-05T08:00:00Z", "tags": {"zone": "north"}}


async def test_list_filters_search_and_pages(api: httpx.AsyncClient) -> None:
    everything = await all_pages(api, "/v1/meters", limit=2)
    assert [m["meter_id"] for m in everything] == ["M-0001", "M-0002", "M-0003", "M-0004", "P-0001", "P-0002",
                                                   "P-0003"]

    def ids(body: dict[str, Any]) -> list[str]:
        return [m["meter_id"] for m in body["items"]]

    assert ids(await ok(api.get("/v1/meters", params={"payg": "true"}))) == ["P-0001", "P-0002", "P-0003"]
    assert ids(await ok(api.get("/v1/meters", params={"consumer_number": "C-2"}))) == ["M-0002"]
    assert ids(await ok(api.get("/v1/meters", params={"search": "c-3"}))) == ["M-0003"]
    assert ids(await ok(api.get("/v1/meters", params={"search": "p-000", "status": "active"}))) == [
        "P-0001", "P-0002", "P-0003"]
    assert ids(await ok(api.get("/v1/meters", params={"utility": "gas"}))) == []
    await fails(api.get("/v1/meters", params={"utility": "steam"}), 422, "invalid_request", "query.utility")
    await fails(api.get("/v1/meters", params={"cursor": "!!"}), 400, "invalid_request", "not one this API issued")


async def test_create_get_update_deactivate(api: httpx.AsyncClient) -> None:
    created = await ok(api.post("/v1/meters", json=NEW), 201)
    assert created == {**NEW, "model": "generic", "payg": False, "status": "active",
                       "installed_at": "2026-01-05T08:00:00Z"}
    assert await ok(api.get("/v1/meters/W-0100")) == created
    await fails(api.post("/v1/meters", json=NEW), 409, "conflict", "W-0100", "already exist")
    [a] = (await ok(api.get("/v1/meters/W-0100/assignments")))["items"]
    assert (a["consumer_number"], a["start"], a["end"]) == ("C-77", "2026-01-05T08:00:00Z", None)

    changed = await ok(api.patch("/v1/meters/W-0100", json={"location": None, "tags": {"zone": "south"},
                                                           "status": "maintenance"}))
    assert (changed["location"], changed["tags"], changed["status"]) == (None, {"zone": "south"}, "maintenance")
    assert changed["device_number"] == "WM-77"  # left out: kept
    await fails(api.patch("/v1/meters/W-0100", json={"payg": None}), 400, "invalid_request", "payg cannot be null")
    await fails(api.patch("/v1/meters/W-0100", json={"consumer_number": "C-1"}), 422, "invalid_request",
                "consumer_number")
    await fails(api.patch("/v1/meters/W-0100", json={"status": "inactive"}), 422, "invalid_request", "status")
    await fails(api.patch("/v1/meters/NOPE", json={}), 404, "not_found", "NOPE")

    gone = await ok(api.post("/v1/meters/W-0100/deactivate"))
    assert (gone["status"], gone["consumer_number"]) == ("inactive", None)
    [a] = (await ok(api.get("/v1/meters/W-0100/assignments")))["items"]
    assert a["end"] is not None
    assert (await ok(api.get("/v1/meters/W-0100")))["status"] == "inactive"  # history kept


async def test_create_refuses_bad_input_with_messages(api: httpx.AsyncClient) -> None:
    body = await fails(api.post("/v1/meters", json={**NEW, "utility": "steam", "meter_id": "bad id"}), 422,
                       "invalid_request", "body.utility", "body.meter_id")
    assert len(body["problems"]) == 2
    await fails(api.post("/v1/meters", json={**NEW, "installed_at": "2026-01-05T08:00:00"}), 400,
                "invalid_request", "installed_at", "no time zone")
    await fails(api.post("/v1/meters", json={**NEW, "location": "a\u0000b"}), 422, "invalid_request", "NUL")
    await fails(api.post("/v1/meters", content=b"{not json", headers={"content-type": "application/json"}), 422,
                "invalid_request")


CSV = """meter_id,utility,protocol,address,device_number,payg,consumer_number,location,tags
W-0201,water,mqtt,meters/W-0201,WM-201,false,C-201,1 Mill Road,zone=north;walk=3
G-0202,gas,modbus_tcp,10.0.0.9:502/2,,no,,2 Mill Road,
"""


async def test_csv_import_adds_every_valid_file(api: httpx.AsyncClient) -> None:
    report = await ok(api.post("/v1/meters/import", content=CSV, headers={"content-type": "text/csv"}), 201)

    assert (report["imported"], report["failed"], report["applied"]) == (2, 0, True)
    assert [(r["row"], r["meter_id"], r["ok"], r["added"]) for r in report["rows"]] == [
        (2, "W-0201", True, True), (3, "G-0202", True, True)]
    got = await ok(api.get("/v1/meters/W-0201"))
    assert (got["tags"], got["consumer_number"], got["payg"]) == ({"zone": "north", "walk": "3"}, "C-201", False)
    assert (await ok(api.get("/v1/meters/G-0202")))["device_number"] is None


async def test_csv_import_with_errors_changes_nothing_unless_partial(api: httpx.AsyncClient) -> None:
    bad = CSV + "M-0001,electricity,modbus_tcp,,,,,,\nX-1,steam,mqtt,,,,,,\nW-0201,water,mqtt,,,,,,\nY-2,gas,mqtt,,,maybe,,,\n"

    report = await ok(api.post("/v1/meters/import", content=bad, headers={"content-type": "text/csv"}), 422)

    assert (report["imported"], report["failed"], report["applied"]) == (0, 4, False)
    errors = {r["row"]: r["error"] for r in report["rows"] if not r["ok"]}
    assert "already exists" in errors[4] and "utility" in errors[5] and "earlier in the file" in errors[6]
    assert "payg: 'maybe'" in errors[7]
    assert not any(r["added"] for r in report["rows"])
    await fails(api.get("/v1/meters/W-0201"), 404, "not_found")

    files = {"file": ("meters.csv", bad.encode(), "text/csv")}
    partial = await ok(api.post("/v1/meters/import", params={"partial": "true"}, files=files), 201)
    assert (partial["imported"], partial["failed"], partial["applied"]) == (2, 4, True)
    assert (await ok(api.get("/v1/meters/G-0202")))["utility"] == "gas"


async def test_csv_import_refuses_files_it_cannot_read(api: httpx.AsyncClient) -> None:
    await fails(api.post("/v1/meters/import", content="id,kind\n1,2\n", headers={"content-type": "text/csv"}), 400,
                "invalid_request", "needs meter_id", "unknown columns: id, kind")
    await fails(api.post("/v1/meters/import", content=b"meter_id\n\xff\xfe", headers={"content-type": "text/csv"}),
                400, "invalid_request", "not UTF-8")
    await fails(api.post("/v1/meters/import", json={"meter_id": "x"}), 400, "invalid_request", "text/csv")
    await fails(api.post("/v1/meters/import", files={"other": ("a.csv", b"meter_id\n", "text/csv")}), 400,
                "invalid_request", "field named 'file'")
    assert (await ok(api.get("/v1/meters/M-0001/readings", params=WIDE)))["items"]
